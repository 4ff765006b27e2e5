"""Ray Train: contrastive fine-tuning and model conversion (planned; see DESIGN.md, path 3).

Trained models are saved as sentence-transformers directories, so `serve` and `embed`
load them through the same `source:` as any other model.
"""
