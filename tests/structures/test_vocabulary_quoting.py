"""A class list is split at commas by the CSV rules: a name holding a comma is written in double
quotes, on the command line (``--classes '"red, square", kite'``) and in a vocabulary file
(docs/RELIABILITY.md)."""

from __future__ import annotations

import pytest

from ovdet.structures.vocabulary import Vocabulary, split_names
from ovdet.utils.errors import VocabularyError


@pytest.mark.parametrize(
    "text, names",
    [
        ('"red, square"', ("red, square",)),
        ('kite, "red, square"', ("kite", "red, square")),
        ('"red, square",kite', ("red, square", "kite")),
        ("kite , umbrella ", ("kite", "umbrella")),
        ('6" pizza, kite', ('6" pizza', "kite")),  # a quote inside a name is a quote
        ('"say ""hi""", kite', ('say "hi"', "kite")),
    ],
)
def test_names_in_double_quotes_keep_their_commas(text, names):
    assert Vocabulary.parse(text).names == names


def test_an_unterminated_quote_is_a_vocabulary_error():
    with pytest.raises(VocabularyError, match="cannot read the class list"):
        split_names('kite, "red, square')


def test_a_vocabulary_file_line_follows_the_same_rules(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text('"red, square", crimson square\nkite\n"blue\n')
    with pytest.raises(VocabularyError, match=r"classes.txt, line 3: cannot read the class list"):
        Vocabulary.parse(str(path))
    path.write_text('"red, square", crimson square\nkite\n')
    vocabulary = Vocabulary.parse(str(path))
    assert vocabulary.names == ("red, square", "kite")
    assert vocabulary.synonyms == (("crimson square",), ())
