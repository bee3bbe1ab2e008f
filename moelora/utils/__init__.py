"""Small utilities with no knowledge of the method: careful file I/O (:mod:`.io`), secret
redaction (:mod:`.redaction`), seeding (:mod:`.seed`) and measurement helpers (:mod:`.measure`)."""
