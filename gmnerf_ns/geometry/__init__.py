"""Camera and mesh maths shared by the model, the data generator and the tools: projection, rasterising, framing."""
