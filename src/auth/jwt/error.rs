//! Why a token was refused: the one error of parsing and validation, in a file of its own so that
//! the validator (`jwt`) uses the parser (`parse`) and the parser needs nothing of the validator.

/// Why a token was refused. Every variant maps to 401 `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is too large")]
    TooLarge,
    #[error("token is malformed")]
    Malformed,
    #[error("token header is invalid")]
    BadHeader,
    #[error("token claims are invalid")]
    BadClaims,
    #[error("token has a critical header extension")]
    Crit,
    #[error("token type is not accepted")]
    WrongType,
    #[error("token issuer is not trusted")]
    UntrustedIssuer,
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("token signing key is unknown")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is issued in the future")]
    IssuedInFuture,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token has been revoked")]
    Revoked,
    /// A sender-constrained token (`cnf`) without proof of its key or certificate.
    #[error("token is bound to a key or certificate the request does not prove")]
    WrongBinding,
}

impl TokenError {
    /// Every error, so the rejection metric can list each reason (at 0) from the start.
    pub const ALL: [TokenError; 16] = [
        TokenError::TooLarge,
        TokenError::Malformed,
        TokenError::BadHeader,
        TokenError::BadClaims,
        TokenError::Crit,
        TokenError::WrongType,
        TokenError::UntrustedIssuer,
        TokenError::AlgorithmNotAllowed,
        TokenError::UnknownKey,
        TokenError::BadSignature,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::IssuedInFuture,
        TokenError::WrongAudience,
        TokenError::Revoked,
        TokenError::WrongBinding,
    ];

    /// Short label for the rejection metric.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::Malformed => "malformed",
            TokenError::BadHeader => "bad_header",
            TokenError::BadClaims => "bad_claims",
            TokenError::Crit => "crit",
            TokenError::WrongType => "wrong_typ",
            TokenError::UntrustedIssuer => "untrusted_issuer",
            TokenError::AlgorithmNotAllowed => "alg_not_allowed",
            TokenError::UnknownKey => "unknown_kid",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "iat_future",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Revoked => "revoked",
            TokenError::WrongBinding => "wrong_binding",
        }
    }
}
