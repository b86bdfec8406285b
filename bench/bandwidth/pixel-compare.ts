// "What the person saw": the browser's canvas against the lossless framebuffer read on the instance,
// pixel for pixel (RGB, no tolerance). Pure functions over buffers.

export interface RgbImage {
  width: number;
  height: number;
  /** width × height × 3 bytes, rows top to bottom. */
  rgb: Buffer;
}

/** A binary PPM (P6, maxval 255), as `import … ppm:-` writes it. */
export function parsePpm(data: Buffer): RgbImage {
  let pos = 0;
  const token = (): string => {
    for (;;) {
      while (pos < data.length && /\s/.test(String.fromCharCode(data[pos]!))) pos++;
      if (data[pos] === 0x23) {
        while (pos < data.length && data[pos] !== 0x0a) pos++;
        continue;
      }
      break;
    }
    const start = pos;
    while (pos < data.length && !/\s/.test(String.fromCharCode(data[pos]!))) pos++;
    return data.subarray(start, pos).toString('latin1');
  };
  const magic = token();
  const width = Number(token());
  const height = Number(token());
  const maxval = Number(token());
  pos++; // the single whitespace byte before the pixels
  if (magic !== 'P6' || !Number.isInteger(width) || !Number.isInteger(height) || maxval !== 255)
    throw new Error(`not an 8-bit binary PPM (${magic} ${width}x${height} max ${maxval})`);
  const rgb = data.subarray(pos, pos + width * height * 3);
  if (rgb.length !== width * height * 3)
    throw new Error(`PPM truncated: ${rgb.length} of ${width * height * 3} bytes`);
  return { width, height, rgb };
}

export interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

export interface PixelDiff {
  width: number;
  height: number;
  /** Pixels whose RGB differs at all (outside `excluded`); all of them when the sizes differ. */
  differing: number;
  /** Of those, the pixels where a channel is off by more than 8 levels (a difference one can see). */
  visible: number;
  /** The largest difference of one channel. */
  maxDelta: number;
  /** Left out of the comparison (inclusive bounds): where the pointer is. */
  excluded: Box | null;
  /** The bounding box of the differing pixels, or null when none differ. */
  box: Box | null;
  sizeMismatch: string | null;
}

/** A mismatch that is not a comparison (no canvas, other size): every pixel counts as differing. */
export function allDiffer(width: number, height: number, why: string): PixelDiff {
  const n = width * height;
  return {
    width,
    height,
    differing: n,
    visible: n,
    maxDelta: 255,
    excluded: null,
    box: null,
    sizeMismatch: why,
  };
}

export function comparePixels(expected: RgbImage, actual: RgbImage, excluded: Box | null = null): PixelDiff {
  const { width, height } = expected;
  if (actual.width !== width || actual.height !== height)
    return allDiffer(
      width,
      height,
      `framebuffer ${width}×${height}, canvas ${actual.width}×${actual.height}`,
    );
  let differing = 0;
  let visible = 0;
  let maxDelta = 0;
  let x0 = width;
  let y0 = height;
  let x1 = -1;
  let y1 = -1;
  const a = expected.rgb;
  const b = actual.rgb;
  for (let i = 0, p = 0; p < width * height; p++, i += 3) {
    if (a[i] === b[i] && a[i + 1] === b[i + 1] && a[i + 2] === b[i + 2]) continue;
    const x = p % width;
    const y = (p - x) / width;
    if (excluded && x >= excluded.x0 && x <= excluded.x1 && y >= excluded.y0 && y <= excluded.y1) continue;
    differing++;
    const d = Math.max(
      Math.abs(a[i]! - b[i]!),
      Math.abs(a[i + 1]! - b[i + 1]!),
      Math.abs(a[i + 2]! - b[i + 2]!),
    );
    if (d > 8) visible++;
    if (d > maxDelta) maxDelta = d;
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  return {
    width,
    height,
    differing,
    visible,
    maxDelta,
    excluded,
    box: differing > 0 ? { x0, y0, x1, y1 } : null,
    sizeMismatch: null,
  };
}

export function sameImage(a: RgbImage, b: RgbImage): boolean {
  return a.width === b.width && a.height === b.height && a.rgb.equals(b.rgb);
}
