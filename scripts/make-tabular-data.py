#!/usr/bin/env python3
"""Writes the bundled tabular datasets data/digits/{train,test}.csv and data/spam/{train,test}.csv.

Sources (see data/README.md for origin, citation and licence):

* digits: scikit-learn's bundled copy, ``sklearn.datasets.load_digits()`` (UCI "Optical
  Recognition of Handwritten Digits", the 1,797-sample test part): 64 features, the pixel
  counts 0..16 of an 8x8 grid, 10 classes (the digit).
* spam: kernlab's ``spam`` data frame, read from the package's ``data/spam.rda`` (Debian
  ``r-cran-kernlab``; R itself is not needed, ``pyreadr`` reads the file): UCI Spambase,
  4,601 e-mails, 57 numeric features in UCI's column order, ``type`` nonspam/spam -> 0/1.

Layout, as papa's CSV loader (papa-train/src/data/csv.rs) reads it: a header row naming the
columns, then one sample a row, the features first and the 0-based integer label in the last
column, named ``label``. Values are written with the fewest characters that keep them exact:
whole numbers as integers, other floats by Python's ``repr`` (the shortest decimal that reads
back to the same double).

Split: stratified, fixed. Within each class, the samples are ordered by the SHA-256 of
``"<dataset>:<seed>:<index>"`` (seed 0, index the 0-based row of the source) and the first
round(20% of the class) go to the test file; the rest is the training file. Both files keep
the source's row order. The order depends on nothing but these strings, so every run, on any
Python or library version, writes the same bytes.

Usage (a venv with scikit-learn, pandas and pyreadr):

    python3 -m venv /tmp/tabvenv && /tmp/tabvenv/bin/pip install scikit-learn pandas pyreadr
    apt-get download r-cran-kernlab && dpkg-deb -x r-cran-kernlab_*.deb /tmp/kernlab
    /tmp/tabvenv/bin/python scripts/make-tabular-data.py \
        --spam-rda /tmp/kernlab/usr/lib/R/site-library/kernlab/data/spam.rda

Without --spam-rda the script looks for an installed kernlab
(/usr/lib/R/site-library/kernlab/data/spam.rda). --out names the folder that receives
digits/ and spam/ (default: data/ beside this script's folder).
"""

import argparse
import hashlib
import os
import sys

SEED = 0
TEST_FRACTION_NUM, TEST_FRACTION_DEN = 1, 5  # 20 % test

# UCI Spambase's 57 attributes (spambase.names), in order, beside kernlab's names for them.
UCI_SPAMBASE = (
    [("word_freq_" + w, k) for w, k in [
        ("make", "make"), ("address", "address"), ("all", "all"), ("3d", "num3d"),
        ("our", "our"), ("over", "over"), ("remove", "remove"), ("internet", "internet"),
        ("order", "order"), ("mail", "mail"), ("receive", "receive"), ("will", "will"),
        ("people", "people"), ("report", "report"), ("addresses", "addresses"),
        ("free", "free"), ("business", "business"), ("email", "email"), ("you", "you"),
        ("credit", "credit"), ("your", "your"), ("font", "font"), ("000", "num000"),
        ("money", "money"), ("hp", "hp"), ("hpl", "hpl"), ("george", "george"),
        ("650", "num650"), ("lab", "lab"), ("labs", "labs"), ("telnet", "telnet"),
        ("857", "num857"), ("data", "data"), ("415", "num415"), ("85", "num85"),
        ("technology", "technology"), ("1999", "num1999"), ("parts", "parts"),
        ("pm", "pm"), ("direct", "direct"), ("cs", "cs"), ("meeting", "meeting"),
        ("original", "original"), ("project", "project"), ("re", "re"), ("edu", "edu"),
        ("table", "table"), ("conference", "conference"),
    ]]
    + [("char_freq_" + c, k) for c, k in [
        (";", "charSemicolon"), ("(", "charRoundbracket"), ("[", "charSquarebracket"),
        ("!", "charExclamation"), ("$", "charDollar"), ("#", "charHash"),
    ]]
    + [
        ("capital_run_length_average", "capitalAve"),
        ("capital_run_length_longest", "capitalLong"),
        ("capital_run_length_total", "capitalTotal"),
    ]
)


def fmt(value):
    """The shortest text that reads back to exactly `value`."""
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"non-finite value {value!r}")
    if v.is_integer():
        return str(int(v))
    text = repr(v)
    assert float(text) == v
    return text


def split(name, labels):
    """Stratified split: (train indices, test indices), each in ascending order."""
    classes = sorted(set(labels))
    test = []
    for c in classes:
        members = [i for i, y in enumerate(labels) if y == c]
        members.sort(key=lambda i: hashlib.sha256(f"{name}:{SEED}:{i}".encode()).digest())
        # round(n / 5), halves up, in integers.
        k = (2 * len(members) * TEST_FRACTION_NUM + TEST_FRACTION_DEN) // (2 * TEST_FRACTION_DEN)
        test.extend(members[:k])
    test_set = set(test)
    train = [i for i in range(len(labels)) if i not in test_set]
    return train, sorted(test)


def write_csv(path, header, rows, labels, indices):
    lines = [",".join(header)]
    for i in indices:
        lines.append(",".join([fmt(v) for v in rows[i]] + [str(int(labels[i]))]))
    data = ("\n".join(lines) + "\n").encode("ascii")
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def check_csv(path, header, rows, labels, indices, classes):
    """Reads the file back and checks it against the source rows."""
    with open(path, encoding="ascii") as f:
        lines = f.read().split("\n")
    assert lines[-1] == "", f"{path}: no final newline"
    lines = lines[:-1]
    assert lines[0].split(",") == header, f"{path}: header"
    assert header[-1] == "label", f"{path}: label is not the last column"
    body = lines[1:]
    assert len(body) == len(indices), f"{path}: {len(body)} rows, expected {len(indices)}"
    seen = set()
    for line, i in zip(body, indices):
        fields = line.split(",")
        assert len(fields) == len(header), f"{path}: ragged row"
        assert [float(x) for x in fields[:-1]] == [float(v) for v in rows[i]], f"{path}: values"
        y = int(fields[-1])
        assert fields[-1] == str(y) and y == labels[i] and 0 <= y < classes, f"{path}: label"
        seen.add(y)
    return seen


def emit(out, name, header, rows, labels, classes):
    os.makedirs(os.path.join(out, name), exist_ok=True)
    assert len(rows) == len(labels)
    assert all(len(r) == len(header) - 1 for r in rows)
    assert sorted(set(labels)) == list(range(classes)), f"{name}: labels are not 0..{classes - 1}"
    train, test = split(name, labels)
    assert sorted(train + test) == list(range(len(labels)))
    print(f"{name}: {len(header) - 1} features, {classes} classes, "
          f"{len(labels)} rows = {len(train)} train + {len(test)} test")
    for part, idx in (("train", train), ("test", test)):
        path = os.path.join(out, name, f"{part}.csv")
        digest = write_csv(path, header, rows, labels, idx)
        seen = check_csv(path, header, rows, labels, idx, classes)
        assert seen == set(range(classes)), f"{path}: classes {sorted(seen)} missing some"
        counts = [sum(1 for i in idx if labels[i] == c) for c in range(classes)]
        print(f"  {part}.csv: {len(idx)} rows, {os.path.getsize(path)} bytes, "
              f"class counts {counts}, sha256 {digest}")


def digits(out):
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = d.data.tolist()
    labels = [int(y) for y in d.target]
    assert len(rows) == 1797 and len(rows[0]) == 64
    assert all(float(v).is_integer() and 0 <= v <= 16 for r in rows for v in r)
    header = list(d.feature_names) + ["label"]
    assert header[0] == "pixel_0_0" and header[63] == "pixel_7_7"
    emit(out, "digits", header, rows, labels, 10)


def spam(out, rda):
    import pyreadr

    with open(rda, "rb") as f:
        print(f"spam: reading {rda} (sha256 {hashlib.sha256(f.read()).hexdigest()})")
    df = pyreadr.read_r(rda)["spam"]
    names = [k for _, k in UCI_SPAMBASE]
    assert list(df.columns) == names + ["type"], "kernlab's columns differ from UCI Spambase's"
    assert df.shape == (4601, 58)
    types = [str(t) for t in df["type"]]
    assert set(types) == {"nonspam", "spam"}
    labels = [1 if t == "spam" else 0 for t in types]
    assert labels.count(1) == 1813 and labels.count(0) == 2788
    rows = df[names].astype("float64").values.tolist()
    # Spambase's first row, as spambase.data gives it.
    assert [fmt(v) for v in rows[0]] == (
        "0 0.64 0.64 0 0.32 0 0 0 0 0 0 0.64 0 0 0 0.32 0 1.29 1.93 0 0.96 " + "0 " * 30
        + "0.778 0 0 3.756 61 278").split(), "first row differs from Spambase's"
    emit(out, "spam", names + ["label"], rows, labels, 2)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(here), "data"))
    p.add_argument("--spam-rda", default="/usr/lib/R/site-library/kernlab/data/spam.rda")
    p.add_argument("--only", choices=["digits", "spam"])
    a = p.parse_args()
    if a.only in (None, "digits"):
        digits(a.out)
    if a.only in (None, "spam"):
        if not os.path.isfile(a.spam_rda):
            sys.exit(f"{a.spam_rda} not found: pass kernlab's data/spam.rda as --spam-rda")
        spam(a.out, a.spam_rda)


if __name__ == "__main__":
    main()
