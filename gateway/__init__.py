"""The API gateway of the services topology: routing, the token check at the edge,
resilience and one OpenAPI document, in front of services it knows only by address."""
