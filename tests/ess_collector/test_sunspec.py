"""The register map matches ESS.md and the official SunSpec definitions; encode/decode round-trips."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ess_collector import sunspec as ss
from ess_collector.sunspec import BASE, MODELS, DeviceInfo, MapError, Reading, decode, encode

# (model, point, address) straight from the ESS.md table
ESS_MD_ADDRESSES = [
    (1, "ID", 40002), (103, "ID", 40070), (103, "W", 40084), (103, "W_SF", 40085), (103, "WH", 40094),
    (103, "WH_SF", 40096), (103, "St", 40108), (103, "Evt1", 40110), (203, "ID", 40122), (203, "W", 40140),
    (203, "W_SF", 40144), (203, "TotWhExp", 40160), (203, "TotWhImp", 40168), (203, "TotWh_SF", 40176),
    (203, "Evt", 40227), (124, "ID", 40229), (124, "ChaState", 40237), (124, "ChaState_SF", 40251),
    (124, "ChaSt", 40240), (802, "ID", 40255), (802, "WHRtg", 40258), (802, "WHRtg_SF", 40308),
    (802, "SoC", 40266), (802, "SoC_SF", 40311), (802, "State", 40277), (802, "Evt1", 40281),
    (802, "W", 40302), (802, "W_SF", 40318), (64900, "ID", 40319),
]  # fmt: skip
LENGTHS = {1: 66, 103: 50, 203: 105, 124: 24, 802: 62, 64900: 14}


@pytest.mark.parametrize(("model", "point", "address"), ESS_MD_ADDRESSES)
def test_addresses_match_ess_md(model: int, point: str, address: int) -> None:
    assert MODELS[model][point].address == address


def test_model_lengths_end_model_and_reads() -> None:
    assert {m.id: m.length for m in MODELS.values()} == LENGTHS
    assert ss.END_ADDRESS == 40335 and ss.MAP_LEN == 337
    assert ss.READS == ((40000, 122), (40122, 107), (40229, 108))
    starts = {m.address for m in MODELS.values()} | {BASE, ss.END_ADDRESS}
    for start, count in ss.READS:
        assert count <= 125 and start in starts  # each read begins at a model boundary...
        assert start + count in starts | {BASE + ss.MAP_LEN}  # ...and ends at one
    assert sum(c for _, c in ss.READS) == ss.MAP_LEN
    vendor = [p.name for p in MODELS[64900].points.values()]
    expected = "ID L LoadW W_SF LoadWh BatChaWh BatDisChaWh Wh_SF AlmCode Hb Tms Pad"
    assert vendor == expected.split()


@pytest.mark.parametrize("model_id", [1, 103, 203, 124, 802])
def test_fallback_equals_official_json(model_id: int) -> None:
    pytest.importorskip("sunspec2")
    assert ss.fallback_point_list(model_id) == ss.official_point_list(model_id)


def test_scale_factor_pairs_follow_official_json() -> None:
    sunspec2_device = pytest.importorskip("sunspec2.device")
    for _, mid, point, sf_point, _ in ss._SCALED:
        if mid != ss.VENDOR_MODEL_ID:
            pdef = sunspec2_device.get_model_def(mid)["group"]["point_defs"][point]
            assert pdef["sf"] == sf_point, (mid, point)
    vendor = {p["name"]: p for p in ss.VENDOR_MODEL_DEF["group"]["points"]}
    assert vendor["LoadWh"]["sf"] == "Wh_SF" and vendor["LoadW"]["sf"] == "W_SF"


def full_reading() -> Reading:
    return Reading(
        pv_w=4321, load_w=987, grid_w=-1234, battery_w=-2100, soc_pct=Decimal("57.3"), capacity_wh=10240,
        pv_wh=123456, load_wh=99999, import_wh=4567, export_wh=8910, battery_charge_wh=1111,
        battery_discharge_wh=999, inverter_state=4, inverter_alarms=0, battery_state=3, battery_alarms=0,
        charge_state=4, meter_events=0, alarm_code=0, heartbeat=65534,
        device_time=datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC),
    )  # fmt: skip


def test_round_trip_and_raw_registers() -> None:
    r = full_reading()
    regs = encode(r, DeviceInfo(serial="SN-1", max_charge_w=5000, max_discharge_w=4000, reserve_pct=10))
    assert len(regs) == 337 and regs[0:2] == [0x5375, 0x6E53] and regs[-2:] == [0xFFFF, 0]
    assert regs[40258 - BASE] == 1024 and regs[40308 - BASE] == 1  # capacity in 10 Wh units, SF +1
    assert regs[40266 - BASE] == 573 and regs[40311 - BASE] == 0xFFFF  # SoC 0.1 %, SF -1
    assert regs[40140 - BASE] == (-1234) & 0xFFFF
    decoded = decode(regs, received_at=datetime.now(UTC))
    assert decoded == r and decoded.received_at is not None
    info = ss.decode_info(regs)
    assert (info.serial, info.max_charge_w, info.max_discharge_w, info.reserve_pct) == (
        "SN-1",
        5000,
        4000,
        10,
    )


def test_missing_values_are_none_never_zero() -> None:
    regs = encode(Reading())
    assert regs[40084 - BASE] == 0x8000  # int16
    assert regs[40094 - BASE : 40096 - BASE] == [0, 0]  # acc32
    assert regs[40266 - BASE] == 0xFFFF  # uint16
    tms = MODELS[64900]["Tms"].address - BASE
    assert tms == 40332 - BASE and regs[tms : tms + 2] == [0xFFFF, 0xFFFF]  # uint32
    assert decode(regs) == Reading()
    # A scale factor that is "not implemented" makes its value missing too.
    regs = encode(full_reading())
    regs[40085 - BASE] = 0x8000
    assert decode(regs).pv_w is None and decode(regs).grid_w == -1234


def test_scale_factors_are_read_from_the_response() -> None:
    regs = encode(full_reading())
    regs[40144 - BASE] = 1  # grid W_SF = +1: -1234 raw means -12340 W
    regs[40311 - BASE] = 0  # SoC_SF = 0: whole percent
    regs[40266 - BASE] = 57
    r = decode(regs)
    assert r.grid_w == -12340 and r.soc_pct == Decimal(57)


def test_soc_falls_back_to_storage_model() -> None:
    regs = encode(full_reading())
    regs[40266 - BASE] = 0xFFFF
    assert decode(regs).soc_pct == Decimal("57.3")


@pytest.mark.parametrize(("address", "value"), [(40000, 0), (40070, 101), (40123, 104), (40335, 0)])
def test_check_map_rejects_foreign_maps(address: int, value: int) -> None:
    regs = encode(full_reading())
    regs[address - BASE] = value
    with pytest.raises(MapError):
        decode(regs)
    with pytest.raises(MapError):
        decode(regs[:-1])


def test_encode_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        encode(Reading(pv_w=40000))


opt_int16 = st.none() | st.integers(-0x7FFF, 0x7FFF)
opt_acc = st.none() | st.integers(1, 0xFFFFFFFF)
opt_u16 = st.none() | st.integers(0, 0xFFFE)
opt_bits = st.none() | st.integers(0, 0xFFFFFFFE)


@settings(max_examples=60, deadline=None)
@given(
    powers=st.tuples(opt_int16, opt_int16, opt_int16, opt_int16),
    energies=st.tuples(opt_acc, opt_acc, opt_acc, opt_acc, opt_acc, opt_acc),
    soc=st.none() | st.integers(0, 1000).map(lambda t: Decimal(t).scaleb(-1)),
    capacity=st.none() | st.integers(0, 0xFFFE).map(lambda c: c * 10),
    codes=st.tuples(opt_u16, opt_bits, opt_u16, opt_bits, opt_u16, opt_bits, opt_u16, opt_u16),
    tms=st.none() | st.integers(0, 0xFFFFFFFE).map(lambda s: datetime.fromtimestamp(s, UTC)),
)
def test_round_trip_property(powers, energies, soc, capacity, codes, tms) -> None:  # type: ignore[no-untyped-def]
    r = Reading(*powers, soc, capacity, *energies, *codes, device_time=tms)  # type: ignore[arg-type]
    assert decode(encode(r)) == r


def _reference_decode(regs: list[int]) -> Reading:
    """The per-point Decimal route the struct decoder replaced: same answers, raw register by register."""
    img = ss._Image(list(regs))

    def scaled(point: ss.Point, sf_point: ss.Point) -> Decimal | None:
        raw, sf = img.value(point), img.value(sf_point)
        return None if raw is None or sf is None or not -10 <= sf <= 10 else Decimal(raw).scaleb(sf)

    values: dict[str, object] = {}
    for fname, mid, point, sf_point, _ in ss._SCALED:
        v = scaled(MODELS[mid][point], MODELS[mid][sf_point])
        values[fname] = None if v is None else int(v.to_integral_value(ROUND_HALF_EVEN))
    for fname, mid, point in ss._PLAIN:
        values[fname] = img.value(MODELS[mid][point])
    soc = scaled(MODELS[802]["SoC"], MODELS[802]["SoC_SF"])
    if soc is None:
        soc = scaled(MODELS[124]["ChaState"], MODELS[124]["ChaState_SF"])
    tms = img.value(MODELS[64900]["Tms"])
    device_time = None if tms is None else datetime.fromtimestamp(tms, UTC)
    return Reading(**values, soc_pct=soc, device_time=device_time)  # type: ignore[arg-type]


WORD = st.one_of(st.sampled_from([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF]), st.integers(0, 0xFFFF))
SF_WORD = st.one_of(st.integers(-12, 12).map(lambda sf: sf & 0xFFFF), st.just(0x8000))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_struct_decoder_equals_the_reference(data: st.DataObject) -> None:
    regs = encode(Reading())
    for _, mid, point, sf_point, _ in ss._SCALED:
        p = MODELS[mid][point]
        for k in range(p.size):
            regs[p.address - BASE + k] = data.draw(WORD)
        regs[MODELS[mid][sf_point].address - BASE] = data.draw(SF_WORD)
    for mid, name in [(m, n) for _, m, n in ss._PLAIN] + [(802, "SoC"), (124, "ChaState"), (64900, "Tms")]:
        p = MODELS[mid][name]
        for k in range(p.size):
            regs[p.address - BASE + k] = data.draw(WORD)
    for mid, name in ((802, "SoC_SF"), (124, "ChaState_SF")):
        regs[MODELS[mid][name].address - BASE] = data.draw(SF_WORD)
    assert decode(regs) == _reference_decode(regs)
    assert ss.decode_payload(b"".join(r.to_bytes(2, "big") for r in regs)) == decode(regs)


def test_payload_of_the_wrong_size_or_map_is_refused() -> None:
    regs = encode(Reading(pv_w=1))
    payload = b"".join(r.to_bytes(2, "big") for r in regs)
    with pytest.raises(MapError):
        ss.decode_payload(payload[:-2])
    with pytest.raises(MapError, match="model 203"):
        ss.decode_payload(payload[:244] + b"\x00\xcc" + payload[246:])  # 40122: model 203's ID


@pytest.mark.parametrize("model_id", [1, 103, 203, 124, 802])
def test_writable_fallback_equals_official_json(model_id: int) -> None:
    pytest.importorskip("sunspec2")
    official = ss.official_writable_points(model_id)
    assert frozenset(ss._FALLBACK_WRITABLE[model_id].split()) == official
    assert model_id != 124 or {"WChaMax", "StorCtl_Mod", "InWRte", "OutWRte", "InOutWRte_RvrtTms"} <= official


def test_storage_controls_round_trip() -> None:
    controls = ss.StorageControls(
        w_cha_max=5000, w_cha_max_sf=0, mod=1, out_w_rte=10000, in_w_rte=-2672, rate_sf=-2, win_tms=0,
        rvrt_tms=900, rmp_tms=0, min_rsv_pct=10, min_rsv_pct_sf=0,
    )  # fmt: skip
    regs = encode(full_reading())
    ss.encode_controls(regs, controls)
    start, count = ss.STORAGE_BLOCK
    assert (start, count) == (40229, 26)
    block = regs[start - BASE : start - BASE + count]
    assert ss.decode_controls(block) == controls and controls.w_cha_max_w == 5000
    assert regs[40242 - BASE] == (-2672) & 0xFFFF  # InWRte
    assert decode(regs, received_at=None) == full_reading()  # the controls do not touch the reading
    bare = ss.decode_controls(encode(full_reading())[start - BASE : start - BASE + count])
    assert bare.mod is None and bare.in_w_rte is None and bare.rate_sf is None  # not implemented
    with pytest.raises(MapError):
        ss.decode_controls(block[:-1])
    assert set(ss.writable_addresses()) == {ss.STORAGE[n].address for n in ss.official_writable_points(124)}
