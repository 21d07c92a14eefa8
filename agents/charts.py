"""An inline SVG bar chart of tokens per day (the page draws it; no script, no library)."""

WIDTH, HEIGHT, GAP = 280, 60, 2


def bars(days: list[dict], key: str = "tokens") -> list[dict]:
    """One bar a day: x, y, width and height in the chart's box, scaled to the highest day."""
    top = max((d[key] for d in days), default=0) or 1
    width = WIDTH / max(len(days), 1)
    found = []
    for n, day in enumerate(days):
        height = round(HEIGHT * float(day[key]) / float(top), 1)
        found.append({**day, "x": round(n * width, 1), "y": round(HEIGHT - height, 1), "width": round(width - GAP, 1), "height": height})
    return found
