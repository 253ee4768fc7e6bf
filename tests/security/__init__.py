"""Security: the URL crawl, headers, escaping, bad input, fuzz, guards, the structure and integrity rules."""
