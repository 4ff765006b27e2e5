"""Documents as text: files read into documents (:mod:`.files`) and documents cut into pieces that fit
an embedding model (:mod:`.chunking`). Pure Python over well-kept libraries; no Ray, no Milvus, so the
ingest command, batch jobs and the store all use the same code."""
