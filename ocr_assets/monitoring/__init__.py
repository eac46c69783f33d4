"""Keeping the model honest: drift of incoming scans (`drift`), the golden set and its re-evaluation (`golden`,
`reevaluation`), people's corrections (`corrections`, `review_app`), the challenger they train (`loop`), alerts
(`alerts`). A plain library: the Dagster layer (`ocr_assets.defs.assets.monitoring`) and the CLI call it."""
