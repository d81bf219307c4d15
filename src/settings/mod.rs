//! The service's settings: the command line with its environment overrides
//! (`args`), and the config file with its validation into the rules
//! (`file`). ("Config" alone means a session's configuration,
//! `domain::config`.)

pub mod args;
pub mod file;
