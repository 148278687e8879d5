"""One module per problem family: encode onto the canvas, constrain each pass, decode and verify."""
