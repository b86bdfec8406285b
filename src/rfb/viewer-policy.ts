// What one viewer may do and what it may cost, as data: decided once when the viewer attaches (from the
// configured caps, narrowed by whatever the session or a share asks for) and then only enforced by the
// relay — the viewer→desktop parser (view-only, quality bounds, size ceiling) and the desktop→viewer
// token bucket (the budget). Nothing else reaches into a live relay to change what a viewer may do.

/** TigerVNC's JPEG-quality levels 0–9 (pseudo-encodings −32…−23), inclusive bounds. */
export interface QualityBounds {
  min: number;
  max: number;
}

export interface Geometry {
  width: number;
  height: number;
}

export interface ViewerPolicy {
  /** Input, clipboard and resize are dropped: the viewer watches, nothing more. */
  viewOnly: boolean;
  /** SetEncodings' JPEG-quality pseudo-encodings are clamped into these levels. */
  quality: QualityBounds;
  /** SetEncodings' compression-level pseudo-encodings are raised to at least this (0 = no floor). */
  compressionMin: number;
  /** Desktop→viewer budget in kbit/s (1000 bit/s); 0 = none. */
  maxKbps: number;
  /** SetDesktopSize above this is clamped to it; null = no ceiling. */
  maxGeometry: Geometry | null;
}

/** What a session or share may ask for on top of the configured caps (it can only tighten them). */
export type ViewerPolicyOverrides = Partial<ViewerPolicy>;

export const QUALITY_LEVELS = 10;

/** A policy that changes nothing: every message passes as sent, no budget. */
export const permissivePolicy: ViewerPolicy = Object.freeze({
  viewOnly: false,
  quality: Object.freeze({ min: 0, max: QUALITY_LEVELS - 1 }),
  compressionMin: 0,
  maxKbps: 0,
  maxGeometry: null,
});

/**
 * The base policy narrowed by `overrides`: view-only wins, quality and geometry take the tighter
 * bound, the budget the smaller non-zero value. An override can never loosen what the operator set.
 */
export function tightenPolicy(base: ViewerPolicy, overrides?: ViewerPolicyOverrides): ViewerPolicy {
  // Nothing to narrow (an owner's viewer): the base itself, not a copy per viewer (issue 9).
  if (overrides === undefined) return base;
  const max = Math.min(base.quality.max, overrides.quality?.max ?? base.quality.max);
  const min = Math.min(max, Math.max(base.quality.min, overrides.quality?.min ?? base.quality.min));
  const budgets = [base.maxKbps, overrides.maxKbps ?? 0].filter((k) => k > 0);
  const geometries = [base.maxGeometry, overrides.maxGeometry ?? null].filter((g): g is Geometry => !!g);
  return {
    viewOnly: base.viewOnly || overrides.viewOnly === true,
    quality: { min, max },
    compressionMin: Math.max(base.compressionMin, overrides.compressionMin ?? 0),
    maxKbps: budgets.length > 0 ? Math.min(...budgets) : 0,
    maxGeometry:
      geometries.length > 0
        ? {
            width: Math.min(...geometries.map((g) => g.width)),
            height: Math.min(...geometries.map((g) => g.height)),
          }
        : null,
  };
}
