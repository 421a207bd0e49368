// TFLM's int8 output stage, exactly as papa_edge::quant::requantize computes it:
//   MultiplyByQuantizedMultiplier(acc, mult, shift)
//     = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc << left, mult), right)
//   with left = max(shift, 0), right = max(-shift, 0), the left shift wrapping in 32 bits
//   (as the C++ does on every target TFLM runs on), the product in 64 bits;
//   then + zero point (33 bits, so the saturating add of the Rust code is a plain clamp)
//   and the clamp to [clamp_min, clamp_max] (the fused ReLU's when it has one).
// Combinational; the engines give it a cycle (see papa_conv's S_REQ).
module papa_requant (
    input  wire signed [31:0] acc,
    input  wire signed [31:0] mult,
    input  wire signed [7:0]  shift,
    input  wire signed [7:0]  zero_point,
    input  wire signed [7:0]  clamp_min,
    input  wire signed [7:0]  clamp_max,
    output wire signed [7:0]  q
);
    wire        left_shift = shift > 0;
    wire [4:0]  left  = left_shift ? shift[4:0] : 5'd0;
    // right = -shift in 0..31 (the image holds shift >= -31).
    wire [7:0]  neg   = -shift;
    wire [4:0]  right = left_shift ? 5'd0 : neg[4:0];

    wire signed [31:0] x  = acc <<< left;
    wire signed [63:0] ab = x * mult;
    wire               overflow = (x == 32'sh80000000) && (mult == 32'sh80000000);
    // Round to nearest with gemmlowp's nudge, then divide by 2^31 truncating toward zero
    // (a negative sum is biased by 2^31 - 1 before the arithmetic shift).
    wire signed [63:0] nudged = ab + (ab >= 0 ? 64'sd1073741824 : -64'sd1073741823);
    wire signed [63:0] biased = nudged + (nudged < 0 ? 64'sd2147483647 : 64'sd0);
    wire signed [63:0] quot   = biased >>> 31;
    wire signed [31:0] high   = overflow ? 32'sh7fffffff : quot[31:0];

    // RoundingDivideByPOT: ties away from zero.
    wire [31:0]        mask      = (32'd1 << right) - 32'd1;
    wire [31:0]        remainder = high & mask;
    wire [31:0]        threshold = (mask >> 1) + {31'd0, high[31]};
    // The shift alone: in a sum with an unsigned term `>>>` would turn logical.
    wire signed [31:0] shifted   = high >>> right;
    wire signed [31:0] scaled    = shifted + {31'd0, remainder > threshold};

    wire signed [32:0] v = {scaled[31], scaled} + {{25{zero_point[7]}}, zero_point};
    wire signed [32:0] lo = {{25{clamp_min[7]}}, clamp_min};
    wire signed [32:0] hi = {{25{clamp_max[7]}}, clamp_max};
    assign q = v < lo ? clamp_min : (v > hi ? clamp_max : v[7:0]);
endmodule
