"""Custom TFX components.

Each takes a ``code_version`` parameter that it does not read: `create_pipeline` sets it to
`tfx_pipeline.code_version.code_fingerprint()` so that TFX's cache re-runs the component when
the project's code changes (see that module).
"""
