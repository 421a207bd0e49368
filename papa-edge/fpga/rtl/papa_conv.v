// One conv layer with its requantisation, ReLU (the clamp) and max-pool fused, as the
// flash runtime computes it (papa_edge::runtime): for each output channel, each pooled
// position, each conv output of the pool window, a sequential multiply-accumulate over
// the kernel (one tap per cycle; a padding tap adds nothing: the input zero point),
// int32 wrapping, then the shared requantiser (papa_requant), and the pool keeps the
// largest requantised value. Outputs are written channel-major, one per pooled position.
//
// No address is formed by multiplication: the sequencer gives the increments (model.vh's
// L_START, L_D_ROW, L_D_PLANE, L_S_W, L_P_STEP, L_P_ROW) and the engine adds them.
// Memories are synchronous (data one cycle after the address), so the accumulate runs one
// tap behind the address.
module papa_conv #(
    parameter ADDR_BITS = 20
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire                     start,
    output reg                      done,
    // The layer (stable from start to done).
    input  wire [15:0]              cin,
    input  wire [15:0]              cout,
    input  wire [15:0]              h,
    input  wire [15:0]              w,
    input  wire [7:0]               k,
    input  wire [7:0]               stride,
    input  wire [7:0]               pool_k,
    input  wire [15:0]              out_h,
    input  wire [15:0]              out_w,
    input  wire signed [17:0]       neg_pad,
    input  wire signed [7:0]        in_zp,
    input  wire [ADDR_BITS-1:0]     w_base,
    input  wire [ADDR_BITS-1:0]     c_base,
    input  wire [ADDR_BITS-1:0]     wr_base,
    input  wire [ADDR_BITS-1:0]     row_len,
    input  wire signed [31:0]       start_addr,
    input  wire signed [31:0]       d_row,
    input  wire signed [31:0]       d_plane,
    input  wire signed [31:0]       s_w,
    input  wire signed [31:0]       p_step,
    input  wire signed [31:0]       p_row,
    // Memories: arena read, weights, the channel's bias (its multiplier and shift go to
    // the requantiser from the same address).
    output wire [ADDR_BITS-1:0]     x_addr,
    input  wire signed [7:0]        x_q,
    output wire [ADDR_BITS-1:0]     w_addr,
    input  wire signed [7:0]        w_q,
    output wire [ADDR_BITS-1:0]     c_addr,
    input  wire signed [31:0]       bias_q,
    // The shared requantiser.
    output wire signed [31:0]       acc_out,
    input  wire signed [7:0]        q,
    // Arena write.
    output reg                      y_we,
    output reg  [ADDR_BITS-1:0]     y_addr,
    output reg  signed [7:0]        y_data
);
    localparam S_IDLE = 3'd0, S_CH = 3'd1, S_POS = 3'd2, S_WIN = 3'd3, S_MAC = 3'd4,
               S_TAIL = 3'd5, S_REQ = 3'd6;
    reg [2:0] state;

    reg [15:0] c, py, px, ci;
    reg [7:0]  dy, dx, ky, kx;
    // Input coordinates (signed: padding) and arena addresses of the pooled position's
    // first window, of the current window, and of the current tap.
    reg signed [17:0] wy_pos, wx_pos, wy, wx, iy, ix;
    reg signed [31:0] xpos_row, xpos, xwin_row, xwin, xaddr;
    reg [ADDR_BITS-1:0] waddr, wchan, yaddr;
    reg signed [31:0] acc;
    reg signed [7:0]  best;
    reg               take;

    assign x_addr  = xaddr[ADDR_BITS-1:0];
    assign w_addr  = waddr;
    assign c_addr  = c_base + {{(ADDR_BITS-16){1'b0}}, c};
    // The requantiser reads a copy taken once per output, so that it settles once per
    // output rather than after every multiply-accumulate (and simulates that much faster).
    reg signed [31:0] acc_req;
    assign acc_out = acc_req;

    wire signed [8:0]  xd   = x_q - in_zp;
    wire signed [16:0] prod = xd * w_q;
    wire signed [31:0] acc_next = acc + (take ? prod : 17'sd0);
    wire in_image = iy >= 0 && iy < $signed({2'b0, h}) && ix >= 0 && ix < $signed({2'b0, w});
    wire signed [7:0] pooled = q > best ? q : best;

    always @(posedge clk) begin
        y_we <= 1'b0;
        done <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
        end else case (state)
            S_IDLE: if (start) begin
                c <= 0;
                wchan <= w_base;
                yaddr <= wr_base;
                best <= -8'sd128;
                py <= 0; px <= 0;
                wy_pos <= neg_pad; wx_pos <= neg_pad;
                xpos_row <= start_addr; xpos <= start_addr;
                state <= S_CH;
            end
            // The channel's address is out; its bias is read by S_WIN.
            S_CH: state <= S_POS;
            S_POS: begin
                wy <= wy_pos; wx <= wx_pos;
                xwin_row <= xpos; xwin <= xpos;
                dy <= 0; dx <= 0;
                state <= S_WIN;
            end
            S_WIN: begin
                acc <= bias_q;
                iy <= wy; ix <= wx; xaddr <= xwin;
                ci <= 0; ky <= 0; kx <= 0;
                waddr <= wchan;
                take <= 1'b0;
                state <= S_MAC;
            end
            S_MAC: begin
                acc <= acc_next;
                take <= in_image;
                waddr <= waddr + 1'b1;
                if (kx != k - 1'b1) begin
                    kx <= kx + 1'b1; ix <= ix + 18'sd1; xaddr <= xaddr + 32'sd1;
                end else if (ky != k - 1'b1) begin
                    kx <= 0; ky <= ky + 1'b1;
                    ix <= wx; iy <= iy + 18'sd1; xaddr <= xaddr + d_row;
                end else if (ci != cin - 1'b1) begin
                    kx <= 0; ky <= 0; ci <= ci + 1'b1;
                    ix <= wx; iy <= wy; xaddr <= xaddr + d_plane;
                end else begin
                    state <= S_TAIL;
                end
            end
            // The last tap's data arrives.
            S_TAIL: begin
                acc <= acc_next;
                acc_req <= acc_next;
                state <= S_REQ;
            end
            // acc is final: q is its requantised, clamped value.
            S_REQ: begin
                if (dx != pool_k - 1'b1) begin
                    best <= pooled;
                    dx <= dx + 1'b1;
                    wx <= wx + $signed({10'b0, stride}); xwin <= xwin + $signed({24'b0, stride});
                    state <= S_WIN;
                end else if (dy != pool_k - 1'b1) begin
                    best <= pooled;
                    dx <= 0; dy <= dy + 1'b1;
                    wy <= wy + $signed({10'b0, stride}); wx <= wx_pos;
                    xwin_row <= xwin_row + s_w; xwin <= xwin_row + s_w;
                    state <= S_WIN;
                end else begin
                    y_we <= 1'b1; y_addr <= yaddr; y_data <= pooled;
                    yaddr <= yaddr + 1'b1;
                    best <= -8'sd128;
                    state <= S_POS;
                    if (px != out_w - 1'b1) begin
                        px <= px + 1'b1;
                        wx_pos <= wx_pos + p_step[17:0]; xpos <= xpos + p_step;
                    end else if (py != out_h - 1'b1) begin
                        px <= 0; py <= py + 1'b1;
                        wy_pos <= wy_pos + p_step[17:0]; wx_pos <= neg_pad;
                        xpos_row <= xpos_row + p_row; xpos <= xpos_row + p_row;
                    end else if (c != cout - 1'b1) begin
                        c <= c + 1'b1;
                        wchan <= wchan + row_len;
                        py <= 0; px <= 0;
                        wy_pos <= neg_pad; wx_pos <= neg_pad;
                        xpos_row <= start_addr; xpos <= start_addr;
                        state <= S_CH;
                    end else begin
                        done <= 1'b1;
                        state <= S_IDLE;
                    end
                end
            end
            default: state <= S_IDLE;
        endcase
    end
endmodule
