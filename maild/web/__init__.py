"""The workspace: agents' console, requesters' pages and the JSON API (issue 13)."""
