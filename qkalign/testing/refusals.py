"""What a refused command prints: exactly one ``qkalign: error:`` line on stderr, exit code 2."""


def one_error_line(proc, *fragments):
    """The single error line of ``proc`` (a CompletedProcess or the ``cli`` fixture's result), asserting
    exit code 2, exactly one non-blank stderr line starting ``qkalign: error: ``, and each fragment in it."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("qkalign: error: "), proc.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    return lines[0]
