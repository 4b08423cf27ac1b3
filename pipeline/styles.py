"""How the layers look, in one place: the year colours, QGIS QML, OGC SLD and KML styles.

One colour per first year everywhere (QGIS, SLD clients, Google Earth, the report's map and charts), so
an analyst can read a year off any of them the same way. The ramp runs from pale yellow (early) to dark
red (latest): new activity is the thing to notice, so it gets the strongest colour. The three layers
differ by symbol, not by colour: clearings are translucent fills, ponds solid fills with a blue
outline (water), sites outlines only, so they can be stacked in one map.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pipeline.summary import REVIEW_STATUSES

# ColorBrewer YlOrRd without its palest class (invisible on white and on imagery)
RAMP = ["#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026"]
POND_OUTLINE = "#08519c"

LAYER_TITLES = {
    "sites": "Mining sites (by first year)",
    "ponds": "Collection ponds (by first year)",
    "clearings": "Cleared slopes (by first year)",
}
# symbol per layer: fill opacity, outline colour (None: the year colour), outline width in mm
SYMBOLS: dict[str, dict[str, Any]] = {
    "clearings": {"fill_opacity": 0.55, "outline": None, "width_mm": 0.0},
    "ponds": {"fill_opacity": 1.0, "outline": POND_OUTLINE, "width_mm": 0.3},
    "sites": {"fill_opacity": 0.0, "outline": None, "width_mm": 0.8},
}


def _hex_to_rgb(h: str) -> tuple[int, int, int]:
    h = h.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def year_colours(years) -> dict[int, str]:
    """``{year: '#rrggbb'}`` for consecutive years, interpolated along RAMP (first year palest)."""
    years = sorted({int(y) for y in years})
    if not years:
        return {}
    if len(years) == 1:
        return {years[0]: RAMP[-2]}
    out = {}
    for i, y in enumerate(years):
        t = i / (len(years) - 1) * (len(RAMP) - 1)
        k = min(int(t), len(RAMP) - 2)
        a, b = _hex_to_rgb(RAMP[k]), _hex_to_rgb(RAMP[k + 1])
        f = t - k
        out[y] = "#%02x%02x%02x" % tuple(round(a[j] + (b[j] - a[j]) * f) for j in range(3))
    return out


def symbol(layer: str, colour: str) -> dict:
    """Fill and outline of one category: ``fill``/``outline`` as '#rrggbb', opacities 0-1, width in mm."""
    s = SYMBOLS[layer]
    return {
        "fill": colour,
        "fill_opacity": s["fill_opacity"],
        "outline": s["outline"] or colour,
        "outline_opacity": 1.0 if s["width_mm"] > 0 else 0.0,
        "width_mm": s["width_mm"],
    }


# --- QGIS QML -------------------------------------------------------------------------------------


def _qgis_colour(hex_colour: str, opacity: float) -> str:
    r, g, b = _hex_to_rgb(hex_colour)
    return f"{r},{g},{b},{round(255 * opacity)}"


def _qml_fill_layer(sym: dict) -> str:
    # Both the <Option> map (QGIS >= 3.26) and the older <prop> list, as QGIS 3.16-3.24 itself wrote them,
    # so the style loads in every QGIS 3 an analyst may have.
    props = {
        "color": _qgis_colour(sym["fill"], sym["fill_opacity"]),
        "style": "solid" if sym["fill_opacity"] > 0 else "no",
        "outline_color": _qgis_colour(sym["outline"], sym["outline_opacity"]),
        "outline_style": "solid" if sym["width_mm"] > 0 else "no",
        "outline_width": f"{sym['width_mm']:g}",
        "outline_width_unit": "MM",
        "joinstyle": "miter",
    }
    opts = "".join(f'<Option name={quoteattr(k)} type="QString" value={quoteattr(v)}/>' for k, v in props.items())
    old = "".join(f"<prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items())
    return f'<layer class="SimpleFill" enabled="1" locked="0" pass="0"><Option type="Map">{opts}</Option>{old}</layer>'


def _qml_symbol(name: str, sym: dict) -> str:
    return (
        f'<symbol type="fill" name={quoteattr(name)} alpha="1" clip_to_extent="1" force_rhr="0">'
        f"{_qml_fill_layer(sym)}</symbol>"
    )


def _review_form() -> str:
    """The sites layer's form: ``review`` as a drop-down of the verdicts the register knows, so an
    analyst editing in QGIS cannot type one it would not."""
    values = "".join(
        f'<Option type="Map"><Option type="QString" name="{v}" value="{v}"/></Option>' for v in REVIEW_STATUSES
    )
    return (
        '<fieldConfiguration><field name="review" configurationFlags="None"><editWidget type="ValueMap">'
        f'<config><Option type="Map"><Option type="List" name="map">{values}</Option></Option></config>'
        "</editWidget></field></fieldConfiguration>\n"
    )


def qml(layer: str, years) -> str:
    """A QGIS style (QML) for one layer: categorised on ``first_year``, one legend entry per year; the
    sites' form offers the verdicts as a drop-down."""
    colours = year_colours(years)
    cats = "".join(f'<category value="{y}" symbol="{i}" label="{y}" render="true"/>' for i, y in enumerate(colours))
    syms = "".join(_qml_symbol(str(i), symbol(layer, c)) for i, c in enumerate(colours.values()))
    source = _qml_symbol("0", symbol(layer, "#999999"))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0-Firenze" styleCategories="Symbology|Labeling|Fields|Forms|Legend">\n'
        f"{_review_form() if layer == 'sites' else ''}"
        '<renderer-v2 type="categorizedSymbol" attr="first_year" symbollevels="0" enableorderby="0" '
        'forceraster="0" referencescale="-1">\n'
        f"<categories>{cats}</categories>\n<symbols>{syms}</symbols>\n"
        f"<source-symbol>{source}</source-symbol>\n"
        "<rotation/><sizescale/></renderer-v2>\n"
        f'<legend type="default-vector" showLabelLegend="0"/>\n'
        "<layerGeometryType>2</layerGeometryType>\n</qgis>\n"
    )


# --- OGC SLD 1.0 ----------------------------------------------------------------------------------


def _sld_rules(layer: str, years) -> str:
    rules = []
    for y, c in year_colours(years).items():
        s = symbol(layer, c)
        fill = (
            f'<Fill><CssParameter name="fill">{s["fill"]}</CssParameter>'
            f'<CssParameter name="fill-opacity">{s["fill_opacity"]:g}</CssParameter></Fill>'
            if s["fill_opacity"] > 0
            else ""
        )
        # SLD widths are in pixels; 1 mm ~ 3.78 px at the 0.28 mm standard pixel
        stroke = (
            f'<Stroke><CssParameter name="stroke">{s["outline"]}</CssParameter>'
            f'<CssParameter name="stroke-width">{s["width_mm"] / 0.28:.1f}</CssParameter></Stroke>'
            if s["width_mm"] > 0
            else ""
        )
        rules.append(
            f"<Rule><Name>{y}</Name><Title>{y}</Title>"
            f"<ogc:Filter><ogc:PropertyIsEqualTo><ogc:PropertyName>first_year</ogc:PropertyName>"
            f"<ogc:Literal>{y}</ogc:Literal></ogc:PropertyIsEqualTo></ogc:Filter>"
            f"<PolygonSymbolizer>{fill}{stroke}</PolygonSymbolizer></Rule>"
        )
    return "".join(rules)


def _named_layer(layer: str, years) -> str:
    return (
        f"<NamedLayer><Name>{escape(layer)}</Name><UserStyle><Name>{escape(layer)}</Name>"
        f"<Title>{escape(LAYER_TITLES.get(layer, layer))}</Title>"
        f"<FeatureTypeStyle>{_sld_rules(layer, years)}</FeatureTypeStyle></UserStyle></NamedLayer>"
    )


def sld(layers, years) -> str:
    """An SLD 1.0 document with one NamedLayer (rules per first year) for each of ``layers``."""
    body = "".join(_named_layer(layer, years) for layer in layers)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<StyledLayerDescriptor version="1.0.0" xmlns="http://www.opengis.net/sld" '
        'xmlns:ogc="http://www.opengis.net/ogc" xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.opengis.net/sld http://schemas.opengis.net/sld/1.0.0/StyledLayerDescriptor.xsd">'
        f"{body}</StyledLayerDescriptor>\n"
    )


# --- KML ------------------------------------------------------------------------------------------


def kml_colour(hex_colour: str, opacity: float) -> str:
    """KML writes colours as aabbggrr."""
    r, g, b = _hex_to_rgb(hex_colour)
    return f"{round(255 * opacity):02x}{b:02x}{g:02x}{r:02x}"
