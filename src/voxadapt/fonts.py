"""Korean fonts: Hangul in plots (matplotlib) and in report.html (CSS stacks + an embedded
subset), also on machines without any Korean system font."""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib.util
import io
import logging
from collections.abc import Iterator
from pathlib import Path

# matplotlib is imported where a plot needs it (plots.py picks the Agg backend): the report's
# CSS and `voxadapt doctor` only look for the font file.

log = logging.getLogger(__name__)

# koreanize-matplotlib ships NanumGothic (SIL Open Font License): plots draw Hangul with it on
# machines without any Korean system font, and the report embeds the glyphs it uses.
KOREAN_FONT_PACKAGE = "koreanize_matplotlib"
KOREAN_FONT_FILE = "NanumGothic.ttf"
_EMBEDDED_FAMILY = "voxadapt NanumGothic"  # the @font-face subset in report.html
# Hangul (jamo, compatibility jamo, syllables), CJK punctuation and Hanja: what the embedded
# font is used for (its unicode-range); Latin text keeps the system's font.
_KOREAN_RANGES = (
    (0x1100, 0x11FF),
    (0x3000, 0x303F),
    (0x3130, 0x318F),
    (0xA960, 0xA97F),
    (0xAC00, 0xD7FF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
)
# The embedded subset comes first: Chromium (156) drew boxes for Hangul in runs mixing
# digits and Hangul ("38도로") when the web font came after the system fonts. The Korean
# system fonts follow for characters outside it (or a report without it).
_KOREAN_FONTS = (
    '"Apple SD Gothic Neo", "Malgun Gothic", "Noto Sans KR", "Noto Sans CJK KR", "NanumGothic"'
)
CSS_FONTS = (
    f'"{_EMBEDDED_FAMILY}", system-ui, -apple-system, "Segoe UI", Roboto, {_KOREAN_FONTS}, '
    "sans-serif"
)
CSS_MONOSPACE = (
    f'"{_EMBEDDED_FAMILY}", ui-monospace, "SFMono-Regular", Menlo, Consolas, "D2Coding", '
    f'"NanumGothicCoding", "Noto Sans Mono CJK KR", {_KOREAN_FONTS}, monospace'
)


def korean_font_file() -> Path | None:
    """NanumGothic.ttf of koreanize-matplotlib, or None when it is not installed.

    Found through the import system without importing the package: its import sets the
    global rcParams and needs `distutils`, which Python 3.12 no longer ships.
    """
    spec = importlib.util.find_spec(KOREAN_FONT_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "fonts" / KOREAN_FONT_FILE
        if path.is_file():
            return path
    return None


@functools.cache
def korean_font_family() -> str | None:
    """Register the Korean font with matplotlib (once); its family name, or None."""
    path = korean_font_file()
    if path is None:
        log.warning(
            "koreanize-matplotlib is not installed: Hangul in plots needs a Korean system font"
        )
        return None
    from matplotlib import font_manager

    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=path).get_name()


@contextlib.contextmanager
def plot_style() -> Iterator[None]:
    """Draw plots inside this: the Korean font first, matplotlib's own fonts for any glyph it
    lacks (matplotlib falls back per glyph). Global rcParams stay untouched."""
    import matplotlib

    family = korean_font_family()
    sans = [family] if family else []
    rc = {
        "font.family": "sans-serif",
        "font.sans-serif": [*sans, *matplotlib.rcParams["font.sans-serif"]],
        "axes.unicode_minus": False,  # NanumGothic has no U+2212: an ASCII minus on the axes
    }
    with matplotlib.rc_context(rc):
        yield


def embedded_font_css(text: str) -> str:
    """An @font-face rule holding the Korean font cut down to the Korean characters of `text`
    (WOFF, base64): the page shows Hangul even where no Korean font is installed, for a few
    kilobytes per hundred syllables. Empty when there is nothing to embed."""
    characters = "".join(
        sorted({c for c in text if any(low <= ord(c) <= high for low, high in _KOREAN_RANGES)})
    )
    path = korean_font_file()
    if not characters or path is None:
        return ""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    options = subset.Options()
    options.flavor = "woff"  # zlib; WOFF2 would need brotli
    options.hinting = False
    options.drop_tables += ["TSI0", "TSI1", "TSI2", "TSI3", "TSI5"]  # VTT sources, unused
    font = TTFont(path, lazy=True)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=characters)
    subsetter.subset(font)
    buffer = io.BytesIO()
    subset.save_font(font, buffer, options)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    ranges = ",".join(f"U+{low:04X}-{high:04X}" for low, high in _KOREAN_RANGES)
    return (
        f'@font-face{{font-family:"{_EMBEDDED_FAMILY}";'
        f'src:url(data:font/woff;base64,{data}) format("woff");unicode-range:{ranges}}}'
    )
