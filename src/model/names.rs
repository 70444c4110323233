//! Name rules of the Prometheus data model (legacy character set, as the
//! reference Pushgateway 1.5.1 validates them).

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if is_metric_name_start(b) => bytes.all(is_metric_name_continuation),
        _ => false,
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if is_label_name_start(b) => bytes.all(is_label_name_continuation),
        _ => false,
    }
}

pub fn is_metric_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

pub fn is_metric_name_continuation(b: u8) -> bool {
    is_metric_name_start(b) || b.is_ascii_digit()
}

pub fn is_label_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

pub fn is_label_name_continuation(b: u8) -> bool {
    is_label_name_start(b) || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_and_label_names() {
        assert!(is_valid_metric_name("ns:rule:rate_5m"));
        assert!(!is_valid_metric_name("1m"));
        assert!(!is_valid_metric_name("bad-name.x"));
        assert!(!is_valid_metric_name(""));
        assert!(is_valid_label_name("_a1"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name("a-b"));
    }
}
