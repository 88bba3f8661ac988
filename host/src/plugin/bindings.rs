//! The only `bindgen!` for the plugin contract (`wit/handler.wit`); everything
//! else imports the generated types from here. `handle` is called
//! asynchronously, so a call blocked in a host function (a WASI sleep, a
//! poll) can be cut off at its deadline; `emit` may trap, so the first emit
//! that breaks a rule ends the call.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    imports: {
        "streamhost:plugin/host.emit": trappable,
    },
    exports: { default: async },
});

pub use self::streamhost::plugin::host::Level;
