"""Board definitions: the shipped files validate, and each kind of mistake is caught with the board named."""

import json

import pytest

from host_tools import boards
from host_tools.boards import (
    BOARDS_DIR,
    PIN_ROLES,
    REQUIRED_PIN_ROLES,
    BoardError,
    board_names,
    load_all,
    load_board,
)

SHIPPED = ("esp32_devkitc", "esp32s3_devkitc", "pico_w", "virtual")
DELETE = object()


def shipped_data(board):
    return json.loads((BOARDS_DIR / f"{board}.json").read_text(encoding="utf-8"))


def edit(data, dotted, value):
    """Set (or with DELETE remove) the value at a dotted path such as "pins.button.pull"."""
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[int(key)] if isinstance(data, list) else data[key]
    if isinstance(data, list):
        data[int(last)] = value
    elif value is DELETE:
        del data[last]
    else:
        data[last] = value


def write_board(tmp_path, data, name):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def load_edited(tmp_path, board, *changes, name=None):
    data = shipped_data(board)
    for dotted, value in changes:
        edit(data, dotted, value)
    return load_board(write_board(tmp_path, data, name or board))


def error_of(tmp_path, board, *changes, name=None):
    with pytest.raises(BoardError) as exc:
        load_edited(tmp_path, board, *changes, name=name)
    return str(exc.value)


# -- the shipped files


def test_the_shipped_boards_are_all_there():
    assert board_names() == sorted(board_names())
    assert set(SHIPPED) <= set(board_names())


@pytest.mark.parametrize("name", board_names())
def test_every_board_file_validates(name):
    board = load_board(name)
    assert board.name == name
    assert board.path == BOARDS_DIR / f"{name}.json"
    assert set(REQUIRED_PIN_ROLES) <= set(board.pins) <= set(PIN_ROLES)


def test_load_all_returns_every_board_by_name():
    loaded = load_all()
    assert list(loaded) == board_names()
    assert all(board.name == name for name, board in loaded.items())


def test_shipped_boards_match_their_hardware():
    esp32 = load_board("esp32_devkitc")
    assert (esp32.port, esp32.chip, esp32.mpy_cross_arch) == ("esp32", "esp32", "xtensawin")
    assert esp32.flash["image_offset"] == 0x1000
    assert [p["name"] for p in esp32.flash["partitions"]] == ["nvs", "phy_init", "factory", "vfs"]
    assert esp32.gpio("ev_pilot_feedback") in range(32, 40)  # ADC1: ADC2 is lost to WiFi

    s3 = load_board("esp32s3_devkitc")
    assert (s3.chip, s3.flash["image_offset"]) == ("esp32s3", 0)

    pico = load_board("pico_w")
    assert (pico.port, pico.chip, pico.mpy_cross_arch) == ("rp2", "rp2040", "armv6m")
    assert pico.flash["image_format"] == "uf2"
    assert pico.gpio("status_led") == "LED"

    virtual = load_board("virtual")
    assert (virtual.port, virtual.chip, virtual.mpy_cross_arch) == ("unix", "host", "x64")
    assert virtual.flash["filesystem"]["type"] == "host-directory"
    assert all(isinstance(spec["gpio"], int) for spec in virtual.pins.values())


# -- loading


def test_a_path_and_a_name_load_the_same_board():
    by_name = load_board("pico_w")
    by_path = load_board(str(BOARDS_DIR / "pico_w.json"))
    assert by_name.device_config() == by_path.device_config()


def test_an_unknown_name_lists_the_available_boards():
    with pytest.raises(BoardError) as exc:
        load_board("olimex_esp32_poe")
    message = str(exc.value)
    assert message.startswith("board 'olimex_esp32_poe': no such board")
    for name in SHIPPED:
        assert name in message


def test_a_missing_file_is_a_board_error(tmp_path):
    with pytest.raises(BoardError) as exc:
        load_board(tmp_path / "gone.json")
    assert str(exc.value).startswith("board 'gone': no such file")


def test_invalid_json_names_board_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "schema": 1,\n  "board": "broken",,\n}\n', encoding="utf-8")
    with pytest.raises(BoardError) as exc:
        load_board(path)
    assert str(exc.value).startswith("board 'broken': broken.json is not valid JSON")
    assert "line 3" in str(exc.value)


def test_a_key_given_twice_is_an_error_not_silently_dropped(tmp_path):
    text = (BOARDS_DIR / "pico_w.json").read_text(encoding="utf-8")
    text = text.replace('"rs485_rx": {"gpio": 5},', '"rs485_rx": {"gpio": 5},\n    "rs485_tx": {"gpio": 7},')
    path = tmp_path / "pico_w.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BoardError) as exc:
        load_board(path)
    assert str(exc.value) == "board 'pico_w': pico_w.json has the key 'rs485_tx' twice in one object"


# -- each kind of mistake


def test_an_unknown_pin_role_names_board_and_role(tmp_path):
    message = error_of(tmp_path, "pico_w", ("pins.relay_pump", {"gpio": 18}))
    assert message.startswith("board 'pico_w': unknown pin role 'relay_pump'")


def test_schema_2_is_refused_before_anything_else(tmp_path):
    # Schema 2 may rename every other key: the version must be what is reported.
    message = error_of(tmp_path, "virtual", ("schema", 2), ("pins", DELETE), ("gpio_map", {}))
    assert message == "board 'virtual': schema 2 is not supported (this tool reads schema 1)"


@pytest.mark.parametrize(
    "board, changes, expected",
    [
        # keys
        ("virtual", [("schema", DELETE)], "board 'virtual': missing key 'schema'"),
        ("virtual", [("wifi", "on")], "board 'virtual': unknown key 'wifi' in the top level"),
        ("virtual", [("heap_kb", DELETE)], "board 'virtual': missing key 'heap_kb' in the top level"),
        ("pico_w", [("flash.filesystem", DELETE)], "board 'pico_w': missing key 'filesystem' in flash"),
        ("pico_w", [("flash.partitions.0.label", "x")], "board 'pico_w': unknown key 'label' in flash.partitions[0]"),
        ("pico_w", [("pins.button.invert", True)], "board 'pico_w': unknown key 'invert' in pins.button"),
        ("pico_w", [("buses.spi", 1)], "board 'pico_w': unknown key 'spi' in buses"),
        ("pico_w", [("buses.i2c", DELETE)], "board 'pico_w': missing key 'i2c' in buses"),
        ("pico_w", [("pins.relay_battery", DELETE)], "board 'pico_w': missing pin role 'relay_battery'"),
        ("pico_w", [("pins.i2c_sda", DELETE)], "board 'pico_w': i2c_scl and i2c_sda come as a pair"),
        # types
        ("virtual", [("schema", "1")], "board 'virtual': schema must be an integer, got string"),
        ("virtual", [("heap_kb", "160")], "board 'virtual': heap_kb must be an integer, got string"),
        ("virtual", [("cpu_hz", True)], "board 'virtual': cpu_hz must be an integer, got boolean"),
        ("virtual", [("title", "")], "board 'virtual': title must be a non-empty string"),
        ("virtual", [("pins", [])], "board 'virtual': pins must be an object, got array"),
        ("virtual", [("pins.button", 9)], "board 'virtual': pins.button must be an object, got integer"),
        ("virtual", [("pins.button.gpio", 9.0)], "board 'virtual': pins.button.gpio must be an integer, got number"),
        ("virtual", [("pins.button.gpio", -1)], "board 'virtual': pins.button.gpio is -1, must be >= 0"),
        ("virtual", [("pins.button.active_low", "yes")], "board 'virtual': pins.button.active_low must be true or false"),
        ("virtual", [("pins.button.pull", "both")], "board 'virtual': pins.button.pull 'both' is not one of: up, down"),
        ("virtual", [("flash.partitions", {})], "board 'virtual': flash.partitions must be an array, got object"),
        # values
        ("virtual", [("heap_kb", 15)], "board 'virtual': heap_kb is 15, must be 16..4096"),
        ("virtual", [("heap_kb", 4097)], "board 'virtual': heap_kb is 4097, must be 16..4096"),
        ("virtual", [("cpu_hz", 0)], "board 'virtual': cpu_hz is 0, must be 1000000..1000000000"),
        ("virtual", [("cpu_hz", 240)], "board 'virtual': cpu_hz is 240, must be"),
        ("virtual", [("port", "esp8266")], "board 'virtual': port 'esp8266' is not one of: esp32, rp2, unix"),
        ("virtual", [("chip", "z80")], "board 'virtual': chip 'z80' is not one of:"),
        ("pico_w", [("port", "esp32")], "board 'pico_w': chip 'rp2040' belongs to port 'rp2', not 'esp32'"),
        ("virtual", [("buses.secure_element_address", 0x80)], "board 'virtual': buses.secure_element_address is 128"),
        # port / architecture
        ("esp32_devkitc", [("mpy_cross_arch", "armv6m")], "board 'esp32_devkitc': mpy_cross_arch 'armv6m' does not run on esp32/esp32 (use: xtensawin)"),
        ("pico_w", [("mpy_cross_arch", "xtensawin")], "board 'pico_w': mpy_cross_arch 'xtensawin' does not run on rp2/rp2040 (use: armv6m)"),
        ("virtual", [("mpy_cross_arch", "xtensawin")], "board 'virtual': mpy_cross_arch 'xtensawin' does not run on unix/host"),
        # flash
        ("pico_w", [("flash.image_format", "bin")], "board 'pico_w': flash.image_format is 'bin', port 'rp2' uses 'uf2'"),
        ("esp32_devkitc", [("flash.image_offset", 0)], "board 'esp32_devkitc': flash.image_offset is 0 (0x0), esp32 boots from 4096 (0x1000)"),
        ("esp32s3_devkitc", [("flash.image_offset", 4096)], "board 'esp32s3_devkitc': flash.image_offset is 4096 (0x1000), esp32s3 boots from 0 (0x0)"),
        ("esp32_devkitc", [("flash.partitions.1.offset", 0xA000)], "board 'esp32_devkitc': partitions 'nvs' and 'phy_init' overlap"),
        ("esp32_devkitc", [("flash.partitions.3.size", 0x300000)], "board 'esp32_devkitc': partition 'vfs' ends at"),
        ("esp32_devkitc", [("flash.partitions.1.name", "nvs")], "board 'esp32_devkitc': two partitions are named 'nvs'"),
        ("esp32_devkitc", [("flash.filesystem.size_kb", 1024)], "board 'esp32_devkitc': flash.filesystem (2097152 (0x200000), 1024 KB) matches no partition"),
        ("pico_w", [("flash.filesystem.type", "host-directory")], "board 'pico_w': flash.filesystem.type 'host-directory' is not one of: littlefs2, fat"),
        ("virtual", [("flash.filesystem.size_kb", 8192)], "board 'virtual': flash.filesystem ends at"),
        ("virtual", [("flash.romfs.label", "x")], "board 'virtual': unknown key 'label' in flash.romfs"),
        ("virtual", [("flash.romfs.size_kb", 0)], "board 'virtual': flash.romfs.size_kb is 0, must be >= 1"),
        ("virtual", [("flash.romfs.size_kb", 4096)], "board 'virtual': flash.romfs ends at"),
        ("virtual", [("flash.romfs.offset", 1048576)], "board 'virtual': flash.romfs overlaps flash.filesystem"),
        ("virtual", [("flash.romfs.segments", 3)], "board 'virtual': flash.romfs.segments is 3, must be 1..2"),
        ("virtual", [("flash.romfs.segments", 0)], "board 'virtual': flash.romfs.segments is 0, must be 1..2"),
        ("virtual", [("flash.romfs.size_kb", 1020)],
         "board 'virtual': flash.romfs.size_kb (1020) does not split into 2 segments of whole 4 KB blocks"),
        ("esp32_devkitc", [("flash.romfs", {"offset": 0x10000, "size_kb": 64})],
         "board 'esp32_devkitc': flash.romfs (65536 (0x10000), 64 KB) matches no partition named 'romfs'"),
    ],
)
def test_each_mistake_is_reported_with_the_board_named(tmp_path, board, changes, expected):
    message = error_of(tmp_path, board, *changes)
    assert message.startswith(expected), message


@pytest.mark.parametrize("heap_kb", [16, 4096])
def test_heap_kb_limits_are_inclusive(tmp_path, heap_kb):
    assert load_edited(tmp_path, "virtual", ("heap_kb", heap_kb)).heap_kb == heap_kb


def test_the_board_key_must_match_the_file_name(tmp_path):
    message = error_of(tmp_path, "esp32_devkitc", name="olimex_esp32_poe")
    assert message == (
        "board 'olimex_esp32_poe': 'board' is 'esp32_devkitc' but must equal the file name ('olimex_esp32_poe.json')"
    )


def test_a_renamed_copy_with_a_matching_board_key_validates(tmp_path):
    board = load_edited(tmp_path, "esp32_devkitc", ("board", "olimex_esp32_poe"), name="olimex_esp32_poe")
    assert board.name == "olimex_esp32_poe"


def test_board_names_are_lower_case_identifiers(tmp_path):
    message = error_of(tmp_path, "virtual", ("board", "Virtual-2"), name="Virtual-2")
    assert message == "board 'Virtual-2': board names use lower-case letters, digits and '_' only"


def test_a_gpio_used_by_two_roles_names_both(tmp_path):
    message = error_of(tmp_path, "pico_w", ("pins.relay_ev_enable.gpio", 14))
    assert message == "board 'pico_w': gpio 14 is used by both 'relay_battery' and 'relay_ev_enable'"
    message = error_of(tmp_path, "pico_w", ("pins.button.gpio", "LED"))
    assert message == "board 'pico_w': gpio LED is used by both 'status_led' and 'button'"


@pytest.mark.parametrize(
    "role", ["relay_battery", "relay_ev_enable", "ev_pilot_pwm", "status_led", "rs485_tx", "rs485_dir", "i2c_sda"]
)
def test_esp32_input_only_gpios_cannot_drive_outputs(tmp_path, role):
    message = error_of(tmp_path, "esp32_devkitc", ("pins.ev_pilot_feedback", DELETE), (f"pins.{role}.gpio", 34))
    assert message == f"board 'esp32_devkitc': pins.{role}: gpio 34 is input-only on esp32, role '{role}' drives its pin"


def test_esp32_input_only_gpios_serve_inputs(tmp_path):
    board = load_edited(tmp_path, "esp32_devkitc", ("pins.rs485_rx.gpio", 39))
    assert board.gpio("rs485_rx") == 39


def test_input_only_is_an_esp32_rule_not_an_esp32s3_one(tmp_path):
    board = load_edited(tmp_path, "esp32s3_devkitc", ("pins.relay_battery.gpio", 35))
    assert board.gpio("relay_battery") == 35


def test_esp32_input_only_gpios_have_no_pull_resistors(tmp_path):
    message = error_of(tmp_path, "esp32_devkitc", ("pins.button.gpio", 35))
    assert message == "board 'esp32_devkitc': pins.button: gpio 35 has no internal pull resistor on esp32"


@pytest.mark.parametrize(
    "board, gpio, expected",
    [
        ("esp32_devkitc", 7, "gpio 7 is wired to the SPI flash on ESP32 modules"),
        ("esp32_devkitc", 24, "esp32 has no gpio 24"),
        ("esp32s3_devkitc", 28, "gpio 28 is wired to the SPI flash/PSRAM on ESP32-S3 modules"),
        ("esp32s3_devkitc", 19, "gpio 19 is the native USB port"),
        ("pico_w", 30, "rp2040 has no gpio 30"),
    ],
)
def test_gpios_the_chip_lacks_or_needs_are_refused(tmp_path, board, gpio, expected):
    message = error_of(tmp_path, board, ("pins.relay_battery.gpio", gpio))
    assert message.startswith(f"board '{board}': pins.relay_battery: {expected}"), message


def test_adc_must_be_on_an_adc_pin(tmp_path):
    message = error_of(tmp_path, "esp32_devkitc", ("pins.ev_pilot_feedback.gpio", 13))
    assert message.startswith("board 'esp32_devkitc': pins.ev_pilot_feedback: gpio 13 cannot be read by the ADC on esp32")
    message = error_of(tmp_path, "pico_w", ("pins.ev_pilot_feedback.gpio", 20))
    assert message.startswith("board 'pico_w': pins.ev_pilot_feedback: gpio 20 cannot be read by the ADC on rp2040")


def test_adc_is_only_for_analog_roles(tmp_path):
    message = error_of(tmp_path, "virtual", ("pins.button.adc", True))
    assert message == "board 'virtual': pins.button.adc: role 'button' is not an analog input"


def test_optional_roles_may_be_left_out(tmp_path):
    optional = [role for role in PIN_ROLES if role not in REQUIRED_PIN_ROLES]
    assert optional == ["ev_pilot_feedback", "i2c_scl", "i2c_sda"]
    board = load_edited(tmp_path, "virtual", *[(f"pins.{role}", DELETE) for role in optional])
    assert "ev_pilot_feedback" not in board.pins
    with pytest.raises(BoardError) as exc:
        board.gpio("i2c_scl")
    assert str(exc.value) == "board 'virtual': no pin is assigned to role 'i2c_scl'"


# -- the Board object


def test_gpio_returns_the_assigned_pin():
    board = load_board("esp32_devkitc")
    assert board.gpio("rs485_tx") == 17
    assert board.gpio("relay_battery") == 25
    assert load_board("pico_w").gpio("status_led") == "LED"


def test_gpio_of_an_unknown_role_names_board_and_role():
    with pytest.raises(BoardError) as exc:
        load_board("virtual").gpio("relay_pump")
    assert str(exc.value).startswith("board 'virtual': unknown pin role 'relay_pump'")


def test_pin_defaults_are_filled_in():
    pins = load_board("virtual").pins
    assert pins["rs485_tx"] == {"gpio": 1, "active_low": False, "pull": None, "adc": False}
    assert pins["button"] == {"gpio": 9, "active_low": True, "pull": "up", "adc": False}
    assert pins["ev_pilot_feedback"]["adc"] is True


def test_device_config_holds_only_what_the_device_needs():
    board = load_board("pico_w")
    config = board.device_config()
    assert set(config) == {"schema", "board", "title", "heap_kb", "pins", "buses"}
    assert config["schema"] == 1
    assert config["board"] == "pico_w"
    assert config["heap_kb"] == 160
    assert config["pins"]["status_led"] == {"gpio": "LED", "active_low": False, "pull": None, "adc": False}
    assert config["buses"] == {"rs485_uart": 1, "i2c": 0, "secure_element_address": 0x60}
    # The device parses it with its json module: plain JSON types only, and a stable text.
    text = json.dumps(config, sort_keys=True)
    assert json.loads(text) == config
    assert json.dumps(load_board("pico_w").device_config(), sort_keys=True) == text


def test_device_config_is_a_copy():
    board = load_board("virtual")
    config = board.device_config()
    config["pins"]["relay_battery"]["gpio"] = 99
    config["buses"]["i2c"] = 5
    assert board.gpio("relay_battery") == 4
    assert board.buses["i2c"] == 0


def test_role_of_gpio_inverts_the_pin_map():
    board = load_board("esp32_devkitc")
    roles = board.role_of_gpio()
    assert roles[17] == "rs485_tx"
    assert roles[0] == "button"
    assert len(roles) == len(board.pins)
    assert all(board.gpio(role) == gpio for gpio, role in roles.items())


# -- command line


def test_cli_checks_every_board_by_default(capsys):
    assert boards.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == board_names()
    assert all(line.startswith("ok ") for line in lines)


def test_cli_fails_on_a_bad_board_and_still_checks_the_rest(tmp_path, capsys):
    bad = shipped_data("pico_w")
    bad["pins"]["relay_pump"] = {"gpio": 18}
    path = write_board(tmp_path, bad, "pico_w")
    assert boards.main([str(path), "virtual"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("ok   virtual ")
    assert err.startswith("FAIL board 'pico_w': unknown pin role 'relay_pump'")
