"""report.json (the contract), report.md and report.html, the console summary."""
