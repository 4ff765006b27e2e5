"""LangChain and LlamaIndex classes over a running rayprism service (the optional extras
``rayprism[langchain]`` and ``rayprism[llama-index]``).

Import the framework's module itself (``rayprism.integrations.langchain``,
``rayprism.integrations.llama_index``): this package imports neither framework.
"""
