"""docs/integrations.md's Python examples, run as written, in order, against the session's service
(which serves ``minilm`` and one reranker); the only liberty taken is the service's port."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import httpx

from tests.integration.test_readme import BLOCK

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def test_the_examples_run_and_answer_from_the_collections(service_url):
    blocks = [code for language, code in BLOCK.findall(DOC.read_text()) if language == "python"]
    assert len(blocks) == 3
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for code in blocks:
            exec(compile(code.replace("http://127.0.0.1:8000", service_url), str(DOC), "exec"), namespace)
    lines = printed.getvalue().splitlines()
    assert lines[0] == "384"
    assert lines[1].startswith("i3 {'section': 'x11', 'year': 2009}")  # the window manager first
    assert "id='vim'" not in lines[7] and "id='apt'" in lines[7]  # get_by_ids after the delete
    texts = ["apt installs packages", "vim edits text", "dpkg unpacks .deb files"]
    reranked = httpx.post(f"{service_url}/v1/rerank", json={"query": "how do I install a package", "documents": texts,
                                                            "top_n": 2}).json()["results"]
    assert lines[8:10] == [f"{round(hit['relevance_score'], 3)} {texts[hit['index']]}" for hit in reranked]
    stored = httpx.get(f"{service_url}/v1/collections/langchain_example").json()
    assert stored["count"] == 2 and stored["fields"] == {"section": "varchar", "metadata": "json"}
    assert lines[-1] == "apt installs packages"  # the LlamaIndex retriever, filtered to section admin
    assert httpx.get(f"{service_url}/v1/collections/llama_example").json()["count"] == 1  # i3 deleted
