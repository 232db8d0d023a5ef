#!/bin/sh
# Add QuantDesk to the desktop's application menu (or remove it again), for the current user.
#
#   ./install.sh              # menu entry + icons, pointing at the QuantDesk program next to this file
#   ./install.sh --uninstall  # remove the menu entry and icons (your models and chats stay)
#
# Files go where desktop environments look (XDG base directories):
#   ${XDG_DATA_HOME:-~/.local/share}/applications/quantdesk.desktop
#   ${XDG_DATA_HOME:-~/.local/share}/icons/hicolor/<size>/apps/quantdesk.{png,svg}
set -eu

here=$(cd "$(dirname "$0")" && pwd)
data="${XDG_DATA_HOME:-$HOME/.local/share}"
apps="$data/applications"
icons="$data/icons/hicolor"
sizes="16 24 32 48 64 128 256 512"

refresh() {
    # Optional helpers: menus pick the changes up sooner where they exist.
    if command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database -q "$apps" 2>/dev/null || true
    fi
    if command -v gtk-update-icon-cache >/dev/null 2>&1; then
        gtk-update-icon-cache -q -t "$icons" 2>/dev/null || true
    fi
}

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$apps/quantdesk.desktop" "$icons/scalable/apps/quantdesk.svg"
    for s in $sizes; do rm -f "$icons/${s}x${s}/apps/quantdesk.png"; done
    refresh
    echo "Removed QuantDesk from the application menu."
    echo "Your models, chats and settings are kept; see the README to remove them too."
    exit 0
fi
if [ $# -gt 0 ]; then
    echo "usage: $0 [--uninstall]" >&2
    exit 2
fi

exe="$here/QuantDesk"
if [ ! -x "$exe" ]; then
    echo "error: $exe not found: run this script from the QuantDesk folder it came with" >&2
    exit 1
fi
# The icons ship inside the bundle (PyInstaller's _internal folder) or, in a checkout, in resources/.
src=""
for d in "$here/_internal/resources/icons" "$here/../resources/icons"; do
    if [ -f "$d/quantdesk.svg" ]; then src="$d"; break; fi
done
if [ -z "$src" ]; then
    echo "error: the QuantDesk icons were not found next to $exe" >&2
    exit 1
fi

# Exec= quoting (Desktop Entry spec): the path in double quotes with \ " ` $ escaped by a backslash,
# every backslash then doubled again as the value is a string, and % doubled.
quoted=$(printf '%s' "$exe" | sed -e 's/\\/\\\\\\\\/g' -e 's/["`$]/\\\\&/g' -e 's/%/%%/g')

mkdir -p "$apps" "$icons/scalable/apps"
sed -e "s|@EXEC@|\"$(printf '%s' "$quoted" | sed -e 's/[|&\\]/\\&/g')\"|" \
    "$here/quantdesk.desktop.in" > "$apps/quantdesk.desktop.tmp"
mv "$apps/quantdesk.desktop.tmp" "$apps/quantdesk.desktop"
cp "$src/quantdesk.svg" "$icons/scalable/apps/quantdesk.svg"
for s in $sizes; do
    mkdir -p "$icons/${s}x${s}/apps"
    cp "$src/quantdesk-$s.png" "$icons/${s}x${s}/apps/quantdesk.png"
done
refresh
echo "Added QuantDesk to the application menu ($apps/quantdesk.desktop)."
