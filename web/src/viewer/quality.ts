// Quality presets → noVNC's JPEG quality (0-9, higher is better) and zlib compression level (0-9,
// higher is smaller but costs CPU on the instance). noVNC's own defaults are 6 and 2.
import type { Quality } from '../lib/prefs.js';

export interface QualitySettings {
  qualityLevel: number;
  compressionLevel: number;
}

export const qualityPresets: Record<Quality, QualitySettings & { label: string; hint: string }> = {
  low: {
    qualityLevel: 2,
    compressionLevel: 9,
    label: 'Low bandwidth',
    hint: 'Blurrier images, fewest bytes',
  },
  medium: { qualityLevel: 6, compressionLevel: 5, label: 'Balanced', hint: 'Good for most connections' },
  high: { qualityLevel: 9, compressionLevel: 1, label: 'High quality', hint: 'Sharp images, more bandwidth' },
};
