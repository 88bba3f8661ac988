//! Guest-side helpers for streamhost handler plugins written in Rust.
//!
//! A handler is a type implementing [`Handler`] exported with [`export!`]:
//!
//! ```ignore
//! use streamhost_sdk::{Event, Failure, Handler};
//!
//! struct Notify;
//! impl Handler for Notify {
//!     fn handle(event: Event) -> Result<(), Failure> {
//!         let order = event.str("order_id")?;
//!         streamhost_sdk::log::info(&format!("order {order}"));
//!         Ok(())
//!     }
//! }
//! streamhost_sdk::export!(Notify);
//! ```
//!
//! No Redis concepts leak in here: a handler sees one event and answers with
//! success, a retryable failure or a permanent failure.

/// The `wit-bindgen` output for the `handler` world; plugins rarely need it directly.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "__export_handler_world",
        default_bindings_module: "streamhost_sdk::bindings",
    });
}

/// The trait a handler implements: `fn handle(event: Event) -> Result<(), Failure>`.
pub use bindings::Guest as Handler;
use bindings::streamhost::plugin::host;
pub use bindings::{Event, Failure};

/// Exports a [`Handler`] implementation as the component's `handle` function.
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        $crate::bindings::__export_handler_world!($ty with_types_in $crate::bindings);
    };
}

impl Failure {
    /// A transient failure: the entry stays pending and is retried later.
    pub fn retryable(reason: impl Into<String>) -> Self {
        Failure::Retryable(reason.into())
    }

    /// A failure that will never succeed: the entry is dead-lettered now.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Failure::Permanent(reason.into())
    }
}

impl Event {
    /// The raw bytes of the first field called `name`, if present.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first field called `name` as UTF-8 text; a missing or non-UTF-8
    /// field is a permanent failure, because redelivery will not fix it.
    pub fn str(&self, name: &str) -> Result<&str, Failure> {
        let raw = self
            .field(name)
            .ok_or_else(|| Failure::permanent(format!("missing field `{name}`")))?;
        std::str::from_utf8(raw)
            .map_err(|_| Failure::permanent(format!("field `{name}` is not valid UTF-8")))
    }

    /// Like [`Event::str`] but `None` when the field is absent.
    pub fn opt_str(&self, name: &str) -> Result<Option<&str>, Failure> {
        match self.field(name) {
            None => Ok(None),
            Some(_) => self.str(name).map(Some),
        }
    }
}

/// Queue an entry for `stream`; it is appended only if this call returns `Ok`,
/// atomically with the ack of the event being handled.
pub fn emit<'a>(stream: &str, fields: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
    let fields: Vec<(String, Vec<u8>)> = fields
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect();
    host::emit(stream, &fields);
}

/// A configuration value given to this plugin by the operator
/// (`host run --plugin-config KEY=VALUE`).
pub fn config(key: &str) -> Option<String> {
    host::config(key)
}

/// Logging through the host, tagged with the plugin name.
pub mod log {
    use crate::host::{Level, log};

    /// Log at trace level.
    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }
    /// Log at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Log at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Log at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Log at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}
