"""The operators' dashboard: history samples, server-side SVG charts and the staff-only views."""
