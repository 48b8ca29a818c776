"""linediff: Myers line/word diffs, unified diff output, patch parsing and application."""
from .opcodes import Opcode, matches, opcodes, similarity
from .patch import FilePatch, Hunk, PatchError, apply_patch, parse_patch, reversed_patch
from .stats import FileStat, diffstat, format_diffstat
from .unified import NO_NEWLINE_MARKER, diff_texts, format_range, group_hunks, unified_diff
from .words import render_word_diff, tokenize, word_diff

__all__ = [
    "FilePatch", "FileStat", "Hunk", "NO_NEWLINE_MARKER", "Opcode", "PatchError", "apply_patch", "diff_texts",
    "diffstat", "format_diffstat", "format_range", "group_hunks", "matches", "opcodes", "parse_patch",
    "render_word_diff", "reversed_patch", "similarity", "tokenize", "unified_diff", "word_diff",
]
