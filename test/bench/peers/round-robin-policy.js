// A per-request TypeScript-policy stand-in for the `ts-select-policy` scenario: round robin in
// JavaScript, so that the only difference from the built-in round robin is the bridge.
let next = 0;
export default {
  select(_request, backends) {
    next = (next + 1) % backends.length;
    return backends[next];
  },
};
