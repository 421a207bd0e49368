// One linear layer with its requantisation (and the ReLU, the clamp), as the flash
// runtime computes it: for each output feature, bias + sum (x - zero point) * w over the
// inputs in int32 (wrapping), one multiply-accumulate per cycle, then the shared
// requantiser (papa_requant). Memories are synchronous: the accumulate runs one input
// behind the address.
module papa_dense #(
    parameter ADDR_BITS = 20
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire                     start,
    output reg                      done,
    input  wire [15:0]              cin,
    input  wire [15:0]              cout,
    input  wire signed [7:0]        in_zp,
    input  wire [ADDR_BITS-1:0]     w_base,
    input  wire [ADDR_BITS-1:0]     c_base,
    input  wire [ADDR_BITS-1:0]     rd_base,
    input  wire [ADDR_BITS-1:0]     wr_base,
    output wire [ADDR_BITS-1:0]     x_addr,
    input  wire signed [7:0]        x_q,
    output wire [ADDR_BITS-1:0]     w_addr,
    input  wire signed [7:0]        w_q,
    output wire [ADDR_BITS-1:0]     c_addr,
    input  wire signed [31:0]       bias_q,
    output wire signed [31:0]       acc_out,
    input  wire signed [7:0]        q,
    output reg                      y_we,
    output reg  [ADDR_BITS-1:0]     y_addr,
    output reg  signed [7:0]        y_data
);
    localparam S_IDLE = 3'd0, S_CH = 3'd1, S_WIN = 3'd2, S_MAC = 3'd3, S_TAIL = 3'd4,
               S_REQ = 3'd5;
    reg [2:0] state;

    reg [15:0] c, i;
    reg [ADDR_BITS-1:0] xaddr, waddr;
    reg signed [31:0] acc;
    reg take;

    assign x_addr  = xaddr;
    assign w_addr  = waddr;
    assign c_addr  = c_base + {{(ADDR_BITS-16){1'b0}}, c};
    // The requantiser reads a copy taken once per output, so that it settles once per
    // output rather than after every multiply-accumulate (and simulates that much faster).
    reg signed [31:0] acc_req;
    assign acc_out = acc_req;

    wire signed [8:0]  xd   = x_q - in_zp;
    wire signed [16:0] prod = xd * w_q;
    wire signed [31:0] acc_next = acc + (take ? prod : 17'sd0);

    always @(posedge clk) begin
        y_we <= 1'b0;
        done <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
        end else case (state)
            S_IDLE: if (start) begin
                c <= 0;
                waddr <= w_base;
                state <= S_CH;
            end
            // The channel's address is out; its bias is read by S_WIN.
            S_CH: state <= S_WIN;
            S_WIN: begin
                acc <= bias_q;
                i <= 0;
                xaddr <= rd_base;
                take <= 1'b0;
                state <= S_MAC;
            end
            S_MAC: begin
                acc <= acc_next;
                take <= 1'b1;
                xaddr <= xaddr + 1'b1;
                waddr <= waddr + 1'b1;
                i <= i + 1'b1;
                if (i == cin - 1'b1) state <= S_TAIL;
            end
            S_TAIL: begin
                acc <= acc_next;
                acc_req <= acc_next;
                state <= S_REQ;
            end
            S_REQ: begin
                y_we <= 1'b1;
                y_addr <= wr_base + {{(ADDR_BITS-16){1'b0}}, c};
                y_data <= q;
                if (c != cout - 1'b1) begin
                    c <= c + 1'b1;
                    state <= S_CH;
                end else begin
                    done <= 1'b1;
                    state <= S_IDLE;
                end
            end
            default: state <= S_IDLE;
        endcase
    end
endmodule
