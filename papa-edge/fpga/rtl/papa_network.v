// The whole int8 network of a papa model: model.vh (written by `papa export --format
// fpga`) gives the layers; the memories are initialised from its $readmemh files (paths
// relative to the directory the simulator or synthesiser runs in, the export directory).
//
// Per inference: the stored input bytes stream in (channel-major, one per cycle while
// in_ready) and go through the per-channel input table into the front of the arena; then
// each layer runs on papa_conv or papa_dense, reading one end of the arena and writing
// the other (the microcontroller runtime's arena and ends, model.vh's L_RD_BASE and
// L_WR_BASE); layer_done pulses after each layer (done_layer: which), done after the last
// with class_out (the first largest logit). One multiply-accumulate per cycle, one shared
// requantiser.
module papa_network (
    input  wire        clk,
    input  wire        rst,
    input  wire        in_valid,
    input  wire [7:0]  in_byte,
    output wire        in_ready,
    output reg         layer_done,
    output reg  [5:0]  done_layer,
    output reg         done,
    output reg  [15:0] class_out
);
`include "model.vh"
    // The hardware's fixed widths (papa_edge::fpga::limits holds the exporter to them).
    localparam ADDR_BITS = 20;
    localparam LAYER_BITS = 6;

    // On-chip memories: the activation arena (read and write port), and the ROMs.
    reg signed [7:0]  arena    [0:ARENA_LEN-1];
    reg signed [7:0]  weights  [0:WEIGHTS_LEN-1];
    reg signed [31:0] bias     [0:CHANNELS_LEN-1];
    reg signed [31:0] mult     [0:CHANNELS_LEN-1];
    reg signed [7:0]  shift    [0:CHANNELS_LEN-1];
    reg signed [7:0]  in_table [0:TABLE_LEN-1];
    initial begin
        $readmemh("weights.mem", weights);
        $readmemh("bias.mem", bias);
        $readmemh("mult.mem", mult);
        $readmemh("shift.mem", shift);
        $readmemh("input_table.mem", in_table);
    end

    localparam S_IN = 2'd0, S_START = 2'd1, S_RUN = 2'd2;
    reg [1:0] state;
    reg [LAYER_BITS-1:0] layer;

    // The current layer's fields (model.vh's packed per-layer values).
    `define FIELD(name) name[32*layer +: 32]
    wire        is_conv = `FIELD(L_CONV) != 0;
    wire [31:0] f_cin = `FIELD(L_CIN), f_cout = `FIELD(L_COUT), f_h = `FIELD(L_H),
                f_w = `FIELD(L_W), f_k = `FIELD(L_K), f_stride = `FIELD(L_STRIDE),
                f_pool_k = `FIELD(L_POOL_K), f_out_h = `FIELD(L_OUT_H),
                f_out_w = `FIELD(L_OUT_W), f_neg_pad = `FIELD(L_NEG_PAD),
                f_in_zp = `FIELD(L_IN_ZP), f_out_zp = `FIELD(L_OUT_ZP),
                f_cmin = `FIELD(L_CLAMP_MIN), f_cmax = `FIELD(L_CLAMP_MAX),
                f_w_base = `FIELD(L_W_BASE), f_c_base = `FIELD(L_C_BASE),
                f_rd_base = `FIELD(L_RD_BASE), f_wr_base = `FIELD(L_WR_BASE),
                f_row_len = `FIELD(L_ROW_LEN), f_start = `FIELD(L_START),
                f_d_row = `FIELD(L_D_ROW), f_d_plane = `FIELD(L_D_PLANE),
                f_s_w = `FIELD(L_S_W), f_p_step = `FIELD(L_P_STEP), f_p_row = `FIELD(L_P_ROW);
    `undef FIELD

    // The engines, their memory ports muxed by the layer's kind.
    reg start_conv, start_dense;
    wire conv_done, dense_done;
    wire [ADDR_BITS-1:0] conv_x, conv_w, conv_c, dense_x, dense_w, dense_c;
    wire [ADDR_BITS-1:0] conv_y_addr, dense_y_addr;
    wire conv_y_we, dense_y_we;
    wire signed [7:0] conv_y, dense_y;
    wire signed [31:0] conv_acc, dense_acc;
    reg  signed [7:0]  x_q, w_q, shift_q;
    reg  signed [31:0] bias_q, mult_q;
    wire signed [7:0]  q;

    papa_conv #(.ADDR_BITS(ADDR_BITS)) conv (
        .clk(clk), .rst(rst), .start(start_conv), .done(conv_done),
        .cin(f_cin[15:0]), .cout(f_cout[15:0]), .h(f_h[15:0]), .w(f_w[15:0]),
        .k(f_k[7:0]), .stride(f_stride[7:0]), .pool_k(f_pool_k[7:0]),
        .out_h(f_out_h[15:0]), .out_w(f_out_w[15:0]), .neg_pad(f_neg_pad[17:0]),
        .in_zp(f_in_zp[7:0]), .w_base(f_w_base[ADDR_BITS-1:0]),
        .c_base(f_c_base[ADDR_BITS-1:0]), .wr_base(f_wr_base[ADDR_BITS-1:0]),
        .row_len(f_row_len[ADDR_BITS-1:0]), .start_addr(f_start), .d_row(f_d_row),
        .d_plane(f_d_plane), .s_w(f_s_w), .p_step(f_p_step), .p_row(f_p_row),
        .x_addr(conv_x), .x_q(x_q), .w_addr(conv_w), .w_q(w_q), .c_addr(conv_c),
        .bias_q(bias_q), .acc_out(conv_acc), .q(q),
        .y_we(conv_y_we), .y_addr(conv_y_addr), .y_data(conv_y)
    );

    papa_dense #(.ADDR_BITS(ADDR_BITS)) dense (
        .clk(clk), .rst(rst), .start(start_dense), .done(dense_done),
        .cin(f_cin[15:0]), .cout(f_cout[15:0]), .in_zp(f_in_zp[7:0]),
        .w_base(f_w_base[ADDR_BITS-1:0]), .c_base(f_c_base[ADDR_BITS-1:0]),
        .rd_base(f_rd_base[ADDR_BITS-1:0]), .wr_base(f_wr_base[ADDR_BITS-1:0]),
        .x_addr(dense_x), .x_q(x_q), .w_addr(dense_w), .w_q(w_q), .c_addr(dense_c),
        .bias_q(bias_q), .acc_out(dense_acc), .q(q),
        .y_we(dense_y_we), .y_addr(dense_y_addr), .y_data(dense_y)
    );

    papa_requant requant (
        .acc(is_conv ? conv_acc : dense_acc), .mult(mult_q), .shift(shift_q),
        .zero_point(f_out_zp[7:0]), .clamp_min(f_cmin[7:0]), .clamp_max(f_cmax[7:0]),
        .q(q)
    );

    // The input stage: byte -> table[channel][byte] -> arena[count] a cycle later.
    reg [ADDR_BITS-1:0] in_count, in_plane, in_addr_d;
    reg [11:0]          in_channel;
    reg                 in_we_d;
    reg signed [7:0]    table_q;
    assign in_ready = state == S_IN && in_count != IN_LEN;

    wire [ADDR_BITS-1:0] x_addr = is_conv ? conv_x : dense_x;
    wire [ADDR_BITS-1:0] w_addr = is_conv ? conv_w : dense_w;
    wire [ADDR_BITS-1:0] c_addr = is_conv ? conv_c : dense_c;
    wire                 y_we   = in_we_d | conv_y_we | dense_y_we;
    wire [ADDR_BITS-1:0] y_addr = in_we_d ? in_addr_d : (conv_y_we ? conv_y_addr : dense_y_addr);
    wire signed [7:0]    y_data = in_we_d ? table_q : (conv_y_we ? conv_y : dense_y);

    always @(posedge clk) begin
        x_q     <= arena[x_addr];
        w_q     <= weights[w_addr];
        bias_q  <= bias[c_addr];
        mult_q  <= mult[c_addr];
        shift_q <= shift[c_addr];
        table_q <= in_table[{in_channel, in_byte}];
        if (y_we) arena[y_addr] <= y_data;
    end

    // Sequencer; the last layer's outputs are watched for the class.
    reg [15:0]       out_index;
    reg signed [7:0] best_logit;
    always @(posedge clk) begin
        start_conv <= 1'b0;
        start_dense <= 1'b0;
        layer_done <= 1'b0;
        done <= 1'b0;
        in_we_d <= 1'b0;
        if (rst) begin
            state <= S_IN;
            in_count <= 0; in_plane <= 0; in_channel <= 0;
            layer <= 0;
        end else case (state)
            S_IN: begin
                if (in_valid && in_ready) begin
                    in_we_d <= 1'b1;
                    in_addr_d <= in_count;
                    in_count <= in_count + 1'b1;
                    if (in_plane == IN_PLANE - 1) begin
                        in_plane <= 0;
                        in_channel <= in_channel + 1'b1;
                    end else begin
                        in_plane <= in_plane + 1'b1;
                    end
                end else if (in_count == IN_LEN && !in_we_d) begin
                    layer <= 0;
                    state <= S_START;
                end
            end
            S_START: begin
                start_conv <= is_conv;
                start_dense <= !is_conv;
                out_index <= 0;
                state <= S_RUN;
            end
            S_RUN: begin
                if (layer == NUM_LAYERS - 1 && (conv_y_we || dense_y_we)) begin
                    if (out_index == 0 || y_data > best_logit) begin
                        best_logit <= y_data;
                        class_out <= out_index;
                    end
                    out_index <= out_index + 1'b1;
                end
                if (conv_done || dense_done) begin
                    layer_done <= 1'b1;
                    done_layer <= layer;
                    if (layer == NUM_LAYERS - 1) begin
                        done <= 1'b1;
                        in_count <= 0; in_plane <= 0; in_channel <= 0;
                        state <= S_IN;
                    end else begin
                        layer <= layer + 1'b1;
                        state <= S_START;
                    end
                end
            end
            default: state <= S_IN;
        endcase
    end
endmodule
