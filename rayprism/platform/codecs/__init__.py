"""Vector compression codecs shared by serving and batch jobs."""
