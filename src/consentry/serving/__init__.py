"""What the HTTP interfaces share: the service objects and their FastAPI dependencies
(`services`), bearer tokens (`auth`) and the one error format (`problems`).

It sits below `consentry.api`, `consentry.web` and `consentry.cli` (all three use it) and
above the capabilities it wires together; it never imports an interface.
"""
