// Runs papa_network on the golden samples of an export and compares every layer's output
// in the arena with the int8 runtime's golden vector, bit for bit, and the class.
// Run in the export directory (the memory files' paths are relative), e.g.
//   iverilog -g2012 -I . -I golden -o tb.vvp tb_network.v papa_*.v && vvp tb.vvp +samples=10
// +first=F runs samples F.. (so that several simulators share the samples). Prints a
// pass/fail count and cycles per inference; $fatal on any mismatch.
`timescale 1ns / 1ps
module tb_network;
`include "model.vh"
`include "golden.vh"
    reg clk = 1'b0, rst = 1'b1;
    always #5 clk = ~clk;

    reg in_valid = 1'b0;
    reg [7:0] in_byte = 8'd0;
    wire in_ready, layer_done, done;
    wire [5:0] done_layer;
    wire [15:0] class_out;
    papa_network dut (
        .clk(clk), .rst(rst), .in_valid(in_valid), .in_byte(in_byte), .in_ready(in_ready),
        .layer_done(layer_done), .done_layer(done_layer), .done(done), .class_out(class_out)
    );

    reg [7:0]  input_bytes [0:IN_LEN-1];
    reg [7:0]  golden [0:ARENA_LEN-1];
    reg [15:0] classes [0:GOLDEN_SAMPLES-1];
    reg [8*64-1:0] path;
    integer first, samples, s, i, l, base, len, bad, layers_ok, layers_bad, classes_ok;
    integer cycles, first_cycles, total_cycles, now;

    always @(posedge clk) now <= now + 1;

    initial begin
        if (!$value$plusargs("first=%d", first)) first = 0;
        if (!$value$plusargs("samples=%d", samples)) samples = GOLDEN_SAMPLES;
        if (first + samples > GOLDEN_SAMPLES) samples = GOLDEN_SAMPLES - first;
        $readmemh("golden/classes.mem", classes);
        now = 0; layers_ok = 0; layers_bad = 0; classes_ok = 0; total_cycles = 0;
        repeat (2) @(posedge clk);
        rst <= 1'b0;
        for (s = first; s < first + samples; s = s + 1) begin
            $sformat(path, "golden/s%04d_input.mem", s);
            $readmemh(path, input_bytes);
            cycles = now;
            for (i = 0; i < IN_LEN; i = i + 1) begin
                in_valid <= 1'b1;
                in_byte <= input_bytes[i];
                @(posedge clk);
                while (!in_ready) @(posedge clk);
            end
            in_valid <= 1'b0;
            for (l = 0; l < NUM_LAYERS; l = l + 1) begin
                @(posedge clk);
                while (!layer_done) @(posedge clk);
                base = L_WR_BASE[32*done_layer +: 32];
                len = L_OUT_LEN[32*done_layer +: 32];
                $sformat(path, "golden/s%04d_layer%0d.mem", s, done_layer);
                $readmemh(path, golden, 0, len - 1);
                bad = 0;
                for (i = 0; i < len; i = i + 1) begin
                    if (dut.arena[base + i] !== golden[i]) begin
                        if (bad < 5)
                            $display("MISMATCH sample %0d layer %0d [%0d]: hardware %0d, golden %0d",
                                     s, done_layer, i, $signed(dut.arena[base + i]), $signed(golden[i]));
                        bad = bad + 1;
                    end
                end
                if (bad == 0) layers_ok = layers_ok + 1;
                else layers_bad = layers_bad + 1;
            end
            while (!done) @(posedge clk);
            cycles = now - cycles;
            if (s == first) first_cycles = cycles;
            total_cycles = total_cycles + cycles;
            if (class_out == classes[s]) classes_ok = classes_ok + 1;
            else $display("MISMATCH sample %0d: class %0d, golden %0d", s, class_out, classes[s]);
        end
        $display("tb_network: %0d samples, %0d of %0d layer outputs bit-exact, %0d classes equal, %0d cycles per inference (first sample), %0d on average",
                 samples, layers_ok, layers_ok + layers_bad, classes_ok, first_cycles,
                 total_cycles / samples);
        if (layers_bad != 0 || classes_ok != samples) $fatal(1, "tb_network: FAIL");
        $display("tb_network: PASS");
        $finish;
    end
endmodule
