"""Settings, by topic: `base` is the panel as `make run` serves it (it gathers `env`, `security`,
`queue` and `sandboxes`); `test` points the same at throw-away resources."""
