"""Ray Train: ``rayprism train`` fine-tunes bi-encoders (text, image–text) and cross-encoders, and
``rayprism convert`` turns models into faster or different ones.

``run`` drives a job (data and hard-negative mining with Ray Data, ``TorchTrainer``, export);
``loop`` is what each worker runs; ``export`` writes the model directory with its card. Trained
and converted models are sentence-transformers directories, so ``serve`` and ``embed`` load them
through the same ``source:`` as any other model.
"""
