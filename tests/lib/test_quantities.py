"""lib/quantities.py's lookups over its one-string tables (both interpreters)."""

import quantities as q


def test_lookups_find_the_first_a_middle_and_the_last_row():
    assert q.unit("energy_import_wh") == "Wh"  # the first row: no "\n" before it
    assert q.obis("energy_import_wh") == "1-0:1.8.0"
    assert q.unit("energy_export_l1_wh") == "Wh"
    assert q.obis("energy_export_l1_wh") == "1-0:22.8.0"
    assert q.unit("temperature_mdegc") == "mdegC"  # the last row
    assert q.obis("temperature_mdegc") is None


def test_a_name_must_match_a_whole_row_name():
    for name in ("energy_import", "nergy_import_wh", "energy_import_wh ", "", "Wh", "1-0:1.8.0", None, 7,
                 "energy_import_wh\nx", "no_such_quantity"):
        assert q.unit(name) is None, name
        assert q.obis(name) is None, name


def test_every_listed_name_is_found_with_its_table_row():
    names = q.names()
    assert len(names) == len(q.QUANTITIES) > 20
    for name in names:
        assert q.unit(name) == q.QUANTITIES[name][1], name
        assert q.obis(name) == q.QUANTITIES[name][2], name
        if q.QUANTITIES[name][2] is not None:
            assert q.by_obis(q.QUANTITIES[name][2]) == name
