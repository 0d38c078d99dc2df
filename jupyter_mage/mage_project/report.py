"""What an import could not carry: every dropped or changed thing is a line of the report."""

from __future__ import annotations

from dataclasses import dataclass, field

#: An error: something the notebook cannot do that the Mage pipeline did (a missing block
#: file, a block kind that does not run here). A warning: carried, but behaves differently.
LEVELS = ("error", "warning", "note")


@dataclass(frozen=True)
class Finding:
    """One thing the import did not carry (or carried differently)."""

    level: str
    pipeline: str
    subject: str
    message: str

    def line(self) -> str:
        """The finding as one line of the printed report."""
        where = f"{self.pipeline}: " if self.pipeline else ""
        subject = f"{self.subject}: " if self.subject else ""
        return f"{self.level.upper():7} {where}{subject}{self.message}"


@dataclass
class Report:
    """The findings of one import, and what it wrote."""

    findings: list[Finding] = field(default_factory=list)
    notebooks: dict[str, str] = field(default_factory=dict)
    #: Trigger names per pipeline, with what happened (``created``/``updated``).
    triggers: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, level: str, pipeline: str, subject: str, message: str) -> None:
        """Record a finding."""
        assert level in LEVELS, level
        self.findings.append(Finding(level, pipeline, subject, message))

    def error(self, pipeline: str, subject: str, message: str) -> None:
        """Record something the notebook cannot do that the Mage pipeline did."""
        self.add("error", pipeline, subject, message)

    def warning(self, pipeline: str, subject: str, message: str) -> None:
        """Record something carried that behaves differently from Mage."""
        self.add("warning", pipeline, subject, message)

    def note(self, pipeline: str, subject: str, message: str) -> None:
        """Record something left out on purpose that changes nothing at run time."""
        self.add("note", pipeline, subject, message)

    @property
    def errors(self) -> list[Finding]:
        """The error findings."""
        return [f for f in self.findings if f.level == "error"]

    def of(self, pipeline: str) -> list[Finding]:
        """The findings about one pipeline."""
        return [f for f in self.findings if f.pipeline == pipeline]

    def render(self) -> str:
        """The report as printed by ``jupyter mage import``."""
        lines = [f"wrote {path} (pipeline {name})" for name, path in self.notebooks.items()]
        lines += [f"trigger '{t}' of {p}: {what}" for p, t, what in self.triggers]
        if self.findings:
            lines.append(f"not carried or carried differently ({len(self.findings)}):")
            order = {level: i for i, level in enumerate(LEVELS)}
            for finding in sorted(self.findings, key=lambda f: (order[f.level], f.pipeline)):
                lines.append("  " + finding.line())
        else:
            lines.append("everything was carried")
        return "\n".join(lines)
