"""Ray Data batch jobs: embed, compress and bulk-load corpora (`rayprism embed`, `rayprism submit`)."""
