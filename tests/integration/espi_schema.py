"""Validate a Green Button feed against espi.xsd 4.0 and the Atom schema it imports.

The schemas live beside the repository, in ``../shared/greenbutton/`` (atom.xsd imports the
xml.xsd beside it); where that folder is absent, the tests that need it skip, saying so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

GREENBUTTON = Path(__file__).resolve().parents[2].parent / "shared" / "greenbutton"

WRAPPER = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:import namespace="http://www.w3.org/2005/Atom" schemaLocation="{atom}"/>
  <xs:import namespace="http://naesb.org/espi" schemaLocation="{espi}"/>
</xs:schema>
"""


def validate_feed(feed: Path, tmp_path: Path) -> None:
    """Raise when ``feed`` does not validate; skip when the schemas are not there."""
    if not (GREENBUTTON / "espi.xsd").is_file():
        pytest.skip(f"the ESPI 4.0 schemas are not in {GREENBUTTON} (shared/greenbutton)")
    import xmlschema

    wrapper = tmp_path / "greenbutton.xsd"
    wrapper.write_text(
        WRAPPER.format(
            atom=(GREENBUTTON / "atom.xsd").as_uri(), espi=(GREENBUTTON / "espi.xsd").as_uri()
        )
    )
    xmlschema.XMLSchema(str(wrapper)).validate(str(feed))
