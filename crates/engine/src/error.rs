//! Errors the proxy answers itself, each with its status code, which side caused it, and
//! whether the connection must close afterwards.

use http::StatusCode;

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong or too slowly.
    Downstream,
    /// The origin refused, failed or was too slow.
    Upstream,
    /// Configuration: no route, no healthy backend.
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Malformed or ambiguous request (framing, header syntax, missing Host).
    BadRequest(&'static str),
    HeaderTooLarge,
    BodyTooLarge,
    /// The client stopped sending its body.
    RequestTimeout,
    /// No route matches the request's host and path.
    NoRoute,
    NoHealthyBackend,
    /// Every pooled connection to the chosen backend stayed busy for the queue timeout.
    PoolExhausted,
    ConnectFailed,
    ConnectTimeout,
    /// `Cache-Control: only-if-cached` and nothing suitable is stored (RFC 9111 §5.2.1.7).
    NotCached,
    /// The origin reset or closed the connection, or sent an invalid response.
    UpstreamFailed,
    ResponseTimeout,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyBackend | ProxyError::PoolExhausted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::ConnectFailed | ProxyError::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout | ProxyError::NotCached => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    pub fn side(self) -> Side {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeaderTooLarge
            | ProxyError::BodyTooLarge
            | ProxyError::RequestTimeout => Side::Downstream,
            ProxyError::NoRoute
            | ProxyError::NoHealthyBackend
            | ProxyError::PoolExhausted
            | ProxyError::NotCached => Side::Internal,
            ProxyError::ConnectFailed
            | ProxyError::ConnectTimeout
            | ProxyError::UpstreamFailed
            | ProxyError::ResponseTimeout => Side::Upstream,
        }
    }

    /// Client errors close the connection: after a framing problem or an unread body, the
    /// next bytes on it cannot be trusted to start a request.
    pub fn closes_connection(self) -> bool {
        self.side() == Side::Downstream
    }

    /// The short body sent to the client. Never names an internal address.
    pub fn message(self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "Bad Request\n",
            ProxyError::HeaderTooLarge => "Request Header Fields Too Large\n",
            ProxyError::BodyTooLarge => "Payload Too Large\n",
            ProxyError::RequestTimeout => "Request Timeout\n",
            ProxyError::NoRoute => "Not Found\n",
            ProxyError::NoHealthyBackend | ProxyError::PoolExhausted => "Service Unavailable\n",
            ProxyError::ConnectFailed | ProxyError::UpstreamFailed => "Bad Gateway\n",
            ProxyError::ConnectTimeout | ProxyError::ResponseTimeout | ProxyError::NotCached => {
                "Gateway Timeout\n"
            }
        }
    }
}
