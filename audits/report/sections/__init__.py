"""The audit sections written with the report framework (integrity, privacy, data, unlearning);
each module has ``audit(run: RunDir, settings: AuditSettings) -> SectionResult``."""
