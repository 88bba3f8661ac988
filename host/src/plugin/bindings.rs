//! The only `bindgen!` for the plugin contract (`wit/handler.wit`); everything
//! else imports the generated types from here.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
});

pub use self::streamhost::plugin::host::Level;
