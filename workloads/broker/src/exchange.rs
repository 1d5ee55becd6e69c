//! Exchanges, their bindings, and routing by exchange type.

use std::sync::Arc;

use crate::error::Exception;

/// Routing algorithm of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExchangeKind {
    /// Routes to queues bound with a key equal to the routing key.
    Direct,
    /// Routes to every bound queue.
    Fanout,
    /// Routes by dot-separated word patterns with `*` (one word) and `#` (zero or more words).
    Topic,
}

impl ExchangeKind {
    /// Parses the type named in exchange.declare. The headers type is not supported.
    pub(crate) fn parse(kind: &str) -> Result<Self, Exception> {
        match kind {
            "direct" => Ok(ExchangeKind::Direct),
            "fanout" => Ok(ExchangeKind::Fanout),
            "topic" => Ok(ExchangeKind::Topic),
            other => Err(Exception::connection(
                amq_protocol::protocol::AMQPHardError::COMMANDINVALID,
                format!("unknown exchange type '{other}'; use direct, fanout or topic"),
            )),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
        }
    }
}

/// A queue bound to an exchange with a binding key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) queue: Arc<str>,
    pub(crate) key: String,
}

/// A declared exchange.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) kind: ExchangeKind,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    pub(crate) internal: bool,
    /// Bindings in the order they were made; a queue bound twice with one key appears once.
    pub(crate) bindings: Vec<Binding>,
}

impl Exchange {
    pub(crate) fn new(kind: ExchangeKind, durable: bool) -> Self {
        Exchange {
            kind,
            durable,
            auto_delete: false,
            internal: false,
            bindings: Vec::new(),
        }
    }

    /// Adds the names of the queues that `routing_key` reaches to `out`, each name once.
    pub(crate) fn route(&self, routing_key: &str, out: &mut Vec<Arc<str>>) {
        for binding in &self.bindings {
            let matched = match self.kind {
                ExchangeKind::Direct => binding.key == routing_key,
                ExchangeKind::Fanout => true,
                ExchangeKind::Topic => topic_matches(&binding.key, routing_key),
            };
            if matched && !out.contains(&binding.queue) {
                out.push(Arc::clone(&binding.queue));
            }
        }
    }

    /// Adds a binding; returns `false` when it already existed.
    pub(crate) fn bind(&mut self, queue: &Arc<str>, key: &str) -> bool {
        if self
            .bindings
            .iter()
            .any(|binding| binding.queue == *queue && binding.key == key)
        {
            return false;
        }
        self.bindings.push(Binding {
            queue: Arc::clone(queue),
            key: key.to_owned(),
        });
        true
    }

    /// Removes a binding; returns `false` when there was none.
    pub(crate) fn unbind(&mut self, queue: &str, key: &str) -> bool {
        let before = self.bindings.len();
        self.bindings
            .retain(|binding| !(&*binding.queue == queue && binding.key == key));
        self.bindings.len() != before
    }

    /// Removes every binding to `queue`.
    pub(crate) fn unbind_queue(&mut self, queue: &str) {
        self.bindings.retain(|binding| &*binding.queue != queue);
    }
}

/// Matches a topic binding pattern against a routing key, word by word.
///
/// Words are separated by `.`; `*` matches exactly one word and `#` zero or more. As in
/// RabbitMQ, the empty routing key has no words, so `#` matches it and `*` does not.
pub(crate) fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let key = if routing_key.is_empty() {
        None
    } else {
        Some(routing_key)
    };
    let pattern = if pattern.is_empty() {
        None
    } else {
        Some(pattern)
    };
    match_words(pattern, key)
}

/// Matches the remaining words; `None` means no words are left.
///
/// NOTE: a pattern with several `#` backtracks, which is exponential in the worst case.
/// Typical patterns have at most one `#`.
fn match_words(pattern: Option<&str>, key: Option<&str>) -> bool {
    let Some(pattern) = pattern else {
        return key.is_none();
    };
    let (word, pattern_rest) = split_word(pattern);
    if word == "#" {
        if match_words(pattern_rest, key) {
            return true;
        }
        return match key {
            Some(key) => match_words(Some(pattern), split_word(key).1),
            None => false,
        };
    }
    match key {
        Some(key) => {
            let (key_word, key_rest) = split_word(key);
            (word == "*" || word == key_word) && match_words(pattern_rest, key_rest)
        }
        None => false,
    }
}

fn split_word(words: &str) -> (&str, Option<&str>) {
    match words.split_once('.') {
        Some((word, rest)) => (word, Some(rest)),
        None => (words, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        let cases = [
            ("#", "", true),
            ("#", "a.b.c", true),
            ("*", "", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("#.c", "a.b.c", true),
            ("#.c", "c", true),
            ("#.c", "a.b", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.b.b.c", false),
            ("a.#.c", "a.c", true),
            ("a.#.c", "a.x.y.c", true),
            ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_UTIL", true),
            ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP", false),
            ("a..b", "a..b", true),
            ("#.#", "a", true),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(
                topic_matches(pattern, key),
                expected,
                "pattern {pattern:?} key {key:?}"
            );
        }
    }

    #[test]
    fn route_names_each_queue_once() {
        let mut exchange = Exchange::new(ExchangeKind::Topic, false);
        let queue: Arc<str> = Arc::from("q");
        assert!(exchange.bind(&queue, "a.*"));
        assert!(exchange.bind(&queue, "#"));
        assert!(!exchange.bind(&queue, "#"));
        let mut out = Vec::new();
        exchange.route("a.b", &mut out);
        assert_eq!(out, vec![queue]);
    }

    #[test]
    fn direct_routes_on_equal_key() {
        let mut exchange = Exchange::new(ExchangeKind::Direct, false);
        exchange.bind(&Arc::from("one"), "k1");
        exchange.bind(&Arc::from("two"), "k2");
        let mut out = Vec::new();
        exchange.route("k2", &mut out);
        assert_eq!(out, vec![Arc::<str>::from("two")]);
    }
}
