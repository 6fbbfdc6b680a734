//! The access log: one line per response, formatted on the worker and written by a dedicated
//! thread, so a slow disk or a blocked stdout never stalls request handling. When the writer
//! falls behind by more than [`QUEUE_LINES`] lines, new lines are dropped and counted instead.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Version};

use crate::config::AccessFormat;

const QUEUE_LINES: usize = 16 * 1024;

#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<String>,
    format: AccessFormat,
    dropped: AtomicU64,
}

/// Everything one line needs, collected while the request is handled.
#[derive(Debug)]
pub struct AccessRecord {
    pub client_ip: IpAddr,
    pub method: Method,
    pub target: String,
    pub version: Version,
    pub request_id: HeaderValue,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub upstream: Option<String>,
}

impl AccessLog {
    /// Opens `target` (`"stdout"` or a file path, appended to) and starts the writer thread.
    /// The thread ends when the last handle is dropped, after writing what was queued.
    pub fn open(target: &str, format: AccessFormat) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "stdout" {
            Box::new(io::stdout())
        } else {
            let path = Path::new(target);
            Box::new(OpenOptions::new().create(true).append(true).open(path)?)
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("gatehouse-access-log".into())
            .spawn(move || write_lines(rx, out))?;
        Ok(Self {
            tx,
            format,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn log(&self, record: &AccessRecord, status: u16, bytes: u64, duration: Duration) {
        let line = match self.format {
            AccessFormat::Json => json_line(record, status, bytes, duration),
            AccessFormat::Combined => combined_line(record, status, bytes),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        // Batch what is already queued, then flush once so lines appear promptly.
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn json_line(r: &AccessRecord, status: u16, bytes: u64, duration: Duration) -> String {
    let upstream = r.upstream.as_deref().map_or("null".into(), json_str);
    format!(
        "{{\"time\":\"{}\",\"client_ip\":\"{}\",\"method\":{},\"path\":{},\"protocol\":\"{:?}\",\"status\":{},\"bytes\":{},\"duration_ms\":{:.3},\"upstream\":{},\"request_id\":{}}}\n",
        rfc3339(SystemTime::now()),
        r.client_ip,
        json_str(r.method.as_str()),
        json_str(&r.target),
        r.version,
        status,
        bytes,
        duration.as_secs_f64() * 1000.0,
        upstream,
        json_str(&String::from_utf8_lossy(r.request_id.as_bytes())),
    )
}

fn combined_line(r: &AccessRecord, status: u16, bytes: u64) -> String {
    let quoted = |v: &Option<HeaderValue>| {
        v.as_ref().map_or("-".into(), |v| {
            String::from_utf8_lossy(v.as_bytes()).replace('"', "\\\"")
        })
    };
    format!(
        "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\"\n",
        r.client_ip,
        clf_time(SystemTime::now()),
        r.method,
        r.target.replace('"', "%22"),
        r.version,
        status,
        bytes,
        quoted(&r.referer),
        quoted(&r.user_agent),
    )
}

/// (year, month, day, hour, minute, second, millisecond) in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis(),
    )
}

pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(t);
    let month = MONTHS[(mo as usize).saturating_sub(1) % 12];
    format!("{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(clf_time(t), "14/Nov/2023:22:13:20 +0000");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn json_lines_are_valid_json() {
        let r = AccessRecord {
            client_ip: "127.0.0.1".parse().expect("ip"),
            method: Method::GET,
            target: "/a\"b?c".into(),
            version: Version::HTTP_11,
            request_id: HeaderValue::from_static("rid"),
            referer: None,
            user_agent: None,
            upstream: Some("http://127.0.0.1:9".into()),
        };
        let line = json_line(&r, 200, 5, Duration::from_millis(3));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["path"], "/a\"b?c");
        assert_eq!(v["status"], 200);
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["upstream"], "http://127.0.0.1:9");
    }
}
