"""``rayprism convert``: models turned into faster or different ones, each written as a directory that
``serve`` and ``embed`` load (and ``SentenceTransformer(path)`` too).

* :mod:`~rayprism.trainers.convert.onnx`: ONNX export (pooling and normalisation in the graph), int8;
* :mod:`~rayprism.trainers.convert.merge`: model soups and task-vector arithmetic;
* :mod:`~rayprism.trainers.convert.wechsel`: vocabulary transfer to a new tokenizer (WECHSEL);
* :mod:`~rayprism.trainers.convert.truncate`: a Matryoshka/Starbucks model at fewer dimensions/layers.
"""
