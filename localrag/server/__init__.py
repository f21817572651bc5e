"""``localrag serve``: the team server (OpenAI-compatible API, knowledge-base API, keys, queue).

A front door like the CLI: it holds one ``localrag.api.LocalRAG`` and translates HTTP to it.
Web-framework imports stay inside this package's modules, loaded only when the server starts.
"""
