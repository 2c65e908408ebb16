"""``python -m adapters.http [PATH]``: write the agent API's OpenAPI document."""

from adapters.http.openapi import main

raise SystemExit(main())
