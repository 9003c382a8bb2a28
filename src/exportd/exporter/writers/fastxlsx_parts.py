"""The small fixed parts of an XLSX package written by the fast writer.

Kept apart from the hot path: these are a few kilobytes per file, written once. The styles hold
exactly the cell formats the sheet builder refers to (:data:`STYLE_DATE`, :data:`STYLE_DATETIME`,
:data:`STYLE_HEADER`), with the number formats of :mod:`exportd.exporter.cells`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from exportd.exporter.cells import DATE_FORMAT, DATETIME_FORMAT
from exportd.exporter.writers.fastxlsx_xml import (
    MICROS_PER_DAY,
    STYLE_DATETIME,
    STYLE_HEADER,
    header_cells,
)

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
SHEET_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
DIGIT_PIXELS = 7
CELL_PADDING_PIXELS = 5
_SHEET_NAME_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")


@dataclass(frozen=True)
class SheetPart:
    name: str
    columns: int
    last_row: int
    autofilter: bool

    @property
    def filter_ref(self) -> str:
        return f"A1:{column_letter(self.columns)}{max(self.last_row, 1)}"


def column_letter(number: int) -> str:
    """1 -> A, 27 -> AA."""
    letters = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def excel_width(characters: int) -> float:
    """The stored column width Excel (and XlsxWriter) uses for ``characters`` digits."""
    pixels = int(characters * DIGIT_PIXELS + 0.5) + CELL_PADDING_PIXELS
    return int(pixels / DIGIT_PIXELS * 256) / 256


def content_types(sheet_count: int) -> bytes:
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{SHEET_TYPE}"/>'
        for i in range(1, sheet_count + 1)
    )
    return (
        XML_DECLARATION
        + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/styles.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        f"{overrides}</Types>"
    ).encode()


def root_rels() -> bytes:
    return (
        XML_DECLARATION + f'<Relationships xmlns="{PKG_REL_NS}">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    ).encode()


def workbook_rels(sheet_count: int) -> bytes:
    sheet_rel = f"{REL_NS}/worksheet"
    rels = "".join(
        f'<Relationship Id="rId{i}" Type="{sheet_rel}" Target="worksheets/sheet{i}.xml"/>'
        for i in range(1, sheet_count + 1)
    )
    styles = f'<Relationship Id="rId{sheet_count + 1}" Type="{REL_NS}/styles" Target="styles.xml"/>'
    return (
        XML_DECLARATION + f'<Relationships xmlns="{PKG_REL_NS}">{rels}{styles}</Relationships>'
    ).encode()


def workbook(sheets: list[SheetPart]) -> bytes:
    entries = "".join(
        f'<sheet name={quoteattr(sheet.name)} sheetId="{i}" r:id="rId{i}"/>'
        for i, sheet in enumerate(sheets, start=1)
    )
    # Excel keeps an autofilter's range in this hidden name; it repairs files without it.
    names = "".join(
        f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
        f"{escape(_absolute_ref(sheet))}</definedName>"
        for i, sheet in enumerate(sheets)
        if sheet.autofilter
    )
    defined = f"<definedNames>{names}</definedNames>" if names else ""
    return (
        XML_DECLARATION + f'<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}">'
        '<bookViews><workbookView activeTab="0"/></bookViews>'
        f"<sheets>{entries}</sheets>{defined}</workbook>"
    ).encode()


def _absolute_ref(sheet: SheetPart) -> str:
    quoted = "'" + sheet.name.replace("'", "''") + "'"
    last = column_letter(sheet.columns)
    return f"{quoted}!$A$1:${last}${max(sheet.last_row, 1)}"


def styles() -> bytes:
    return (
        XML_DECLARATION + f'<styleSheet xmlns="{MAIN_NS}">'
        f'<numFmts count="2"><numFmt numFmtId="164" formatCode={quoteattr(DATE_FORMAT)}/>'
        f'<numFmt numFmtId="165" formatCode={quoteattr(DATETIME_FORMAT)}/></numFmts>'
        '<fonts count="2"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font>'
        '<font><b/><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
        "</cellStyleXfs>"
        '<cellXfs count="4"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
        '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        '<xf numFmtId="165" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
        '<xf numFmtId="0" fontId="1" fillId="0" borderId="0" xfId="0" applyFont="1"/></cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    ).encode()


def sheet_head(header: list[str], widths: list[int], *, selected: bool, frozen: bool) -> bytes:
    """Everything before the data rows, the bold header row included."""
    view = ' tabSelected="1"' if selected else ""
    pane = (
        '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
        '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
        if frozen
        else ""
    )
    cols = "".join(
        f'<col min="{i}" max="{i}" width="{excel_width(w)}" customWidth="1"/>'
        for i, w in enumerate(widths, start=1)
    )
    header_row = f'<row r="1">{header_cells(header)}</row>' if header else ""
    return (
        XML_DECLARATION + f'<worksheet xmlns="{MAIN_NS}" xmlns:r="{REL_NS}">'
        f'<sheetViews><sheetView workbookViewId="0"{view}>{pane}</sheetView></sheetViews>'
        '<sheetFormatPr defaultRowHeight="15"/>'
        f"{f'<cols>{cols}</cols>' if cols else ''}<sheetData>{header_row}"
    ).encode()


def sheet_tail(sheet: SheetPart) -> bytes:
    autofilter = f'<autoFilter ref="{sheet.filter_ref}"/>' if sheet.autofilter else ""
    return f"</sheetData>{autofilter}</worksheet>".encode()


def safe_sheet_name(name: str) -> str:
    return _SHEET_NAME_FORBIDDEN.sub("_", name)[:31] or "Sheet"


def _text_cell(text: str, style: int = 0) -> str:
    styled = f' s="{style}"' if style else ""
    return f'<c{styled} t="inlineStr"><is><t xml:space="preserve">{escape(text)}</t></is></c>'


def _datetime_cell(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone).replace(tzinfo=None)
    delta = local - datetime(1899, 12, 30)
    serial = delta.days + (delta.seconds * 1_000_000 + delta.microseconds) / MICROS_PER_DAY
    return f'<c s="{STYLE_DATETIME}"><v>{serial!r}</v></c>'


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")


def metadata_sheet(
    export_id: str,
    export_type: str,
    requested_at: datetime,
    completed_at: datetime,
    timezone: str,
    rows: int,
) -> bytes:
    """The "Export info" sheet: the same fields and layout as the XlsxWriter writer's."""
    zone = ZoneInfo(timezone)
    lines = [
        _text_cell("Field", STYLE_HEADER)
        + _text_cell("Value", STYLE_HEADER)
        + _text_cell("ISO 8601 (UTC)", STYLE_HEADER),
        _text_cell("Export id") + _text_cell(export_id),
        _text_cell("Export type") + _text_cell(export_type),
        _text_cell("Requested at")
        + _datetime_cell(requested_at, zone)
        + _text_cell(utc_iso(requested_at)),
        _text_cell("Completed at")
        + _datetime_cell(completed_at, zone)
        + _text_cell(utc_iso(completed_at)),
        _text_cell("Time zone") + _text_cell(timezone),
        _text_cell("Rows") + f"<c><v>{rows}</v></c>",
    ]
    rows_xml = "".join(f'<row r="{i}">{cells}</row>' for i, cells in enumerate(lines, start=1))
    cols = "".join(
        f'<col min="{i}" max="{i}" width="{excel_width(w)}" customWidth="1"/>'
        for i, w in enumerate((16, 22, 34), start=1)
    )
    return (
        XML_DECLARATION + f'<worksheet xmlns="{MAIN_NS}" xmlns:r="{REL_NS}">'
        '<sheetViews><sheetView workbookViewId="0"/></sheetViews>'
        f'<sheetFormatPr defaultRowHeight="15"/><cols>{cols}</cols>'
        f"<sheetData>{rows_xml}</sheetData></worksheet>"
    ).encode()
