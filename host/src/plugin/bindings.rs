//! The only `bindgen!` for the plugin contract (`wit/handler.wit`); everything
//! else imports the generated types from here. `handle` is called
//! asynchronously, so a call blocked in a host function (a WASI sleep, a
//! poll) can be cut off at its deadline. The `host` interface's functions
//! are linked by hand in [`super::host_api`], which reads `emit`'s
//! arguments straight out of the guest's memory.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    exports: { default: async },
});

pub use self::streamhost::plugin::host::Level;
