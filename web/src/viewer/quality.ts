// The quality presets: noVNC's JPEG quality (0–9, higher is better) and zlib compression level (0–9,
// higher is smaller but costs CPU on the instance), by name. The one table the toolbar, the saved
// preference (`clouddesk.prefs` → `quality` in localStorage) and the bandwidth benchmark use.
//
// No preset goes below compression level 2: at level 1 TigerVNC's Tight encoder drops its palette
// threshold to 24 colours, so glyphs go out as JPEG and typing costs ~7× more (issue 13, measured).
// "auto" picks its levels from the measured link (automatic-quality.ts).

export interface QualitySettings {
  qualityLevel: number;
  compressionLevel: number;
}

export interface QualityPreset extends QualitySettings {
  label: string;
  hint: string;
}

export const fixedPresets = {
  low: {
    qualityLevel: 2,
    compressionLevel: 9,
    label: 'Low bandwidth',
    hint: 'Blurrier images, fewest bytes',
  },
  medium: { qualityLevel: 6, compressionLevel: 5, label: 'Balanced', hint: 'Good for most connections' },
  high: { qualityLevel: 9, compressionLevel: 2, label: 'High quality', hint: 'Sharp images, more bandwidth' },
  // noVNC's own defaults, for the bandwidth benchmark's comparison; not offered in the menu.
  novnc: { qualityLevel: 6, compressionLevel: 2, label: 'noVNC defaults', hint: 'Quality 6, compression 2' },
} as const satisfies Record<string, QualityPreset>;

export type FixedQualityName = keyof typeof fixedPresets;
export type QualityName = 'auto' | FixedQualityName;

/** What the Quality menu offers, in order. */
export const qualityMenu: ReadonlyArray<{ name: QualityName; label: string; hint: string }> = [
  { name: 'auto', label: 'Automatic', hint: 'Follows the measured connection, as TigerVNC’s viewer does' },
  { name: 'low', ...fixedPresets.low },
  { name: 'medium', ...fixedPresets.medium },
  { name: 'high', ...fixedPresets.high },
];

export function isQualityName(name: string): name is QualityName {
  return name === 'auto' || Object.hasOwn(fixedPresets, name);
}
