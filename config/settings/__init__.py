"""Settings modules: `base` (shared, env-driven), `local` (embedded demo), `test`, `production`.

Every environment variable the site reads is read in `base` through one typed reader (`env`).
"""
